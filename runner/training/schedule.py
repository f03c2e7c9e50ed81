"""The run's step plan, the same for every engine: total optimizer steps, warmup, evaluation interval,
and the learning rate at each step (the schedules transformers implements, so `hf` and `mlx` agree)."""

from __future__ import annotations

import math

from runner.config import RunConfig


def total_steps(config: RunConfig, train_rows: int) -> int:
    """Optimizer steps of the whole run, fixed up front so every trainer release agrees on it."""
    if config.train.max_steps is not None:
        return config.train.max_steps
    batches = math.ceil(train_rows / config.train.per_device_batch_size)
    per_epoch = max(batches // config.train.gradient_accumulation, 1)
    return max(math.ceil(config.train.epochs * per_epoch), 1)


def warmup_steps(config: RunConfig, steps: int) -> int:
    return math.ceil(config.train.warmup_ratio * steps)


def eval_interval(config: RunConfig, steps: int) -> int:
    return max(1, round(steps * config.train.eval_every_percent / 100))


def learning_rate(config: RunConfig, steps: int, done: int) -> float:
    """The learning rate of the update that follows `done` completed updates (transformers' lambdas:
    linear and cosine decay to zero after a linear warmup; `constant` has no warmup)."""
    peak, kind = config.train.learning_rate, config.train.scheduler
    warmup = warmup_steps(config, steps)
    if kind == "constant":
        return peak
    if done < warmup:
        return peak * done / max(1, warmup)
    if kind == "linear":
        return peak * max(0.0, (steps - done) / max(1, steps - warmup))
    if kind == "cosine":
        progress = (done - warmup) / max(1, steps - warmup)
        return peak * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return peak  # constant_with_warmup, after its warmup
