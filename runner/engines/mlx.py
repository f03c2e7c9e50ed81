"""The `mlx` engine: LoRA with MLX and mlx-lm (Apple silicon; MLX's CPU back end elsewhere), from the
same config, into the same run directory, with the same checkpoint and resume guarantees as `hf`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlx.core as mx

from runner.config import RunConfig
from runner.engines import Result, TrainContext, mlx_config, mlx_model
from runner.engines import mlx_loop as loop
from runner.engines.mlx_checkpoint import TRAINING_STATE, Checkpointer, restore
from runner.errors import EngineError
from runner.rundir import ADAPTER_DIR, PEFT_DIR
from runner.training import data
from runner.training.checkpoint import Checkpoint, Totals
from runner.training.final_outputs import copier, publish
from runner.training.metrics import MetricsLog
from runner.training.saver import Policy
from runner.training.schedule import eval_interval, learning_rate, total_steps
from runner.util import console


def check(config: RunConfig) -> None:
    """Raise EngineError naming every setting that has no meaning for MLX (none is silently ignored)."""
    problems = mlx_config.unsupported(config)
    if problems:
        raise EngineError("the mlx engine cannot honour " + "; ".join(problems))


def train(config: RunConfig, context: TrainContext) -> Result:
    check(config)
    precision = mlx_model.resolve_precision(config.train.precision)
    mx.random.seed(config.train.seed)  # LoRA's A matrices are drawn when the layers are added
    model, tokenizer, model_dir = mlx_model.load(config, precision)
    settings = mlx_model.lora_settings(config, model)
    mlx_model.add_lora(model, settings)
    if config.train.gradient_checkpointing:
        from mlx_lm.tuner.trainer import grad_checkpoint

        grad_checkpoint(model.layers[0])  # recomputes each decoder layer's activations in the backward pass
    train_set = _load_split(config.data.train, config, tokenizer)
    valid_set = _load_split(config.data.valid, config, tokenizer) if config.data.valid else None
    pad_id = tokenizer.pad_token_id
    steps = total_steps(config, len(train_set.input_ids))
    policy = Policy(every_percent=config.checkpoint.every_percent, every_minutes=config.checkpoint.every_minutes, total_steps=steps)
    resume = context.resume_from
    carried = Totals.recorded(resume)
    checkpointer = Checkpointer(context.store, policy, **context.saver_options(config, carried))
    optimizer = loop.make_optimizer(config)
    start = restore(resume.path, model, optimizer)["step"] if resume else 0
    batches = loop.Batches(train_set, config.train.per_device_batch_size, config.train.seed)
    accumulation = config.train.gradient_accumulation
    run = _Run(config, MetricsLog(context.run_dir, total_steps=steps, trackers=context.trackers), steps)

    model.train()
    checkpointer.begin()
    with console.progress_bar(total=steps, initial=start) as bar, checkpointer.settled_on_failure():
        if valid_set is not None and resume is None:
            run.log_eval(0, loop.evaluate(model, valid_set, config.train.per_device_batch_size, pad_id), batches.epoch(0), bar)
        step, every_eval = start, eval_interval(config, steps)
        while step < steps and not context.stop.requested:
            checkpointer.check()  # a background write that failed stops the run here
            loop.seed_step(config.train.seed, step)
            micro = [loop.make_batch(train_set, batches.rows(step * accumulation + i), pad_id) for i in range(accumulation)]
            lr = learning_rate(config, steps, step)
            result = loop.train_step(model, optimizer, micro, lr, config.train.max_grad_norm)
            step += 1
            epoch = batches.epoch(step * accumulation)
            run.log_train(step, result, lr, epoch, bar)
            if valid_set is not None and (step % every_eval == 0 or step == steps):
                run.log_eval(step, loop.evaluate(model, valid_set, config.train.per_device_batch_size, pad_id), epoch, bar)
            if context.stop.requested or policy.due(step):
                checkpointer.save_now(step, model, optimizer, settings, {"epoch": epoch, "train_tokens": run.tokens}, str(model_dir))
    checkpointer.finish()
    stopped = step < steps
    attempt = checkpointer.attempt(run.tokens) if start < steps else Totals()
    peft_problem = None
    if not stopped:
        # The policy always saves the last step, so the outputs come from that checkpoint: this attempt's, or the
        # one it resumed from when an earlier attempt stopped after it, before its outputs were written.
        final = checkpointer.last or resume
        if checkpointer.last is None:
            console.say(f"step {start} of {steps} is done: writing the run's outputs from {final.path.name}")
        peft_problem = _publish(context, final, model, config, model_dir)
    return Result(
        engine="mlx",
        steps=step,
        train_rows=len(train_set.input_ids),
        valid_rows=len(valid_set.input_ids) if valid_set else 0,
        attempt=attempt,
        totals=carried + attempt,
        stopped=stopped,
        details={
            "precision": precision,
            "device": str(mx.default_device()),
            "mlx": mx.__version__,
            "quantization": config.quantization,
            "quantized_layers": mlx_model.quantized_layers(model),
            "truncated_rows": train_set.truncated,
            "dropped_rows": train_set.dropped,
            "resumed_from_step": resume.step if resume else None,
            "adapter_format": "mlx-lm",
            "peft_export": PEFT_DIR if peft_problem is None and not stopped else None,
            "peft_export_skipped": peft_problem,
        },
    )


def _publish(context: TrainContext, final: Checkpoint, model: Any, config: RunConfig, model_dir: Path) -> str | None:
    """RUN/adapter (the final checkpoint's adapter files) and RUN/adapter_peft; returns why there is no PEFT export, if not."""
    publish(context.run_dir, ADAPTER_DIR, copier(final.path, leave_out=TRAINING_STATE), context.store)
    problem = mlx_model.peft_export_problem(model, model_dir)
    if problem is None:
        publish(context.run_dir, PEFT_DIR, lambda out: mlx_model.export_peft(model, config, out), context.store)
    return problem


class _Run:
    """Metrics rows and the progress bar's loss figures, written as the hf engine writes them."""

    def __init__(self, config: RunConfig, log: MetricsLog, steps: int) -> None:
        self.every = config.train.log_every_steps
        self.steps = steps
        self.log = log
        self.tokens = 0  # this attempt's training tokens
        self.window: list[tuple[loop.StepResult, float]] = []
        self.clock = time.perf_counter()
        self.postfix: dict[str, str] = {}

    def log_train(self, step: int, result: loop.StepResult, lr: float, epoch: float, bar: Any) -> None:
        self.tokens += result.tokens
        self.window.append((result, lr))
        if step % self.every and step != self.steps:
            bar.update(1)
            return
        now = time.perf_counter()
        elapsed, self.clock = now - self.clock, now
        results = [r for r, _ in self.window]
        loss = sum(r.loss for r in results) / len(results)
        self.log.append(step=step, epoch=round(epoch, 4), loss=loss, lr=lr, grad_norm=results[-1].grad_norm,
                        tokens_per_s=round(sum(r.tokens for r in results) / elapsed, 1) if elapsed > 0 else None,
                        memory_mb=round(_peak_memory_mb(), 1))
        self.window = []
        self.postfix["loss"] = f"{loss:.3f}"
        bar.set_postfix(self.postfix, refresh=False)
        bar.update(1)

    def log_eval(self, step: int, loss: float, epoch: float, bar: Any) -> None:
        self.log.append(step=step, epoch=round(epoch, 4), eval_loss=loss, memory_mb=round(_peak_memory_mb(), 1))
        self.clock = time.perf_counter()  # evaluation time is not training time
        self.postfix["eval_loss"] = f"{loss:.3f}"
        bar.set_postfix(self.postfix, refresh=False)


def _peak_memory_mb() -> float:
    return mx.get_peak_memory() / 2**20


def _load_split(ref: str, config: RunConfig, tokenizer: Any) -> data.Tokenized:
    rows = data.read_jsonl(ref)
    fmt = data.detect_format(rows, config.data.format, ref)
    return data.tokenize(rows, fmt, tokenizer, config.train.max_seq_len, ref)
