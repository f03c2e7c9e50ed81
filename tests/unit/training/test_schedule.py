"""The step plan and learning rates the mlx engine shares with the rest: equal to transformers' schedulers."""

from __future__ import annotations

import typing

import pytest
import torch
import transformers

from runner import config as cfg
from runner.training.schedule import eval_interval, learning_rate, total_steps, warmup_steps
from tests.helpers import DEMO_CONFIG

SCHEDULERS = typing.get_args(cfg.Scheduler)


def test_every_scheduler_is_covered():
    assert set(SCHEDULERS) == {"linear", "cosine", "constant", "constant_with_warmup"}


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize(("steps", "warmup_ratio"), [(37, 0.1), (144, 0.05), (5, 0.0), (1, 0.5)])
def test_learning_rate_equals_transformers_scheduler(name, steps, warmup_ratio):
    config = cfg.load(DEMO_CONFIG, [f"train.scheduler={name}", f"train.warmup_ratio={warmup_ratio}", "train.learning_rate=3e-3"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.train.learning_rate)
    warmup = warmup_steps(config, steps)
    scheduler = transformers.get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    for done in range(steps + 1):  # the lr after `done` scheduler steps is the one of update number done + 1
        expected = scheduler.get_last_lr()[0]
        assert learning_rate(config, steps, done) == pytest.approx(expected, rel=1e-12, abs=1e-18), (name, steps, done)
        optimizer.step()
        scheduler.step()


def test_learning_rate_shape():
    """Warmup from zero to the peak, then decay to zero at the end (constant: the peak throughout)."""
    steps = 40
    config = cfg.load(DEMO_CONFIG, ["train.scheduler=linear", "train.warmup_ratio=0.1", "train.learning_rate=1e-3"])
    assert warmup_steps(config, steps) == 4
    assert learning_rate(config, steps, 0) == 0.0
    assert learning_rate(config, steps, 2) == pytest.approx(5e-4)
    assert learning_rate(config, steps, 4) == pytest.approx(1e-3)
    assert learning_rate(config, steps, steps) == 0.0
    constant = cfg.load(DEMO_CONFIG, ["train.scheduler=constant", "train.warmup_ratio=0.1", "train.learning_rate=1e-3"])
    assert {learning_rate(constant, steps, done) for done in range(steps + 1)} == {1e-3}


@pytest.mark.parametrize(
    ("overrides", "rows", "expected"),
    [
        ((), 768, 144),  # the demo: 48 batches of 16 a epoch, 3 epochs
        (("train.max_steps=7",), 768, 7),  # max_steps overrides epochs
        (("train.per_device_batch_size=8", "train.gradient_accumulation=4", "train.epochs=2"), 100, 6),  # 13 batches -> 3 updates an epoch
        (("train.per_device_batch_size=8", "train.gradient_accumulation=4", "train.epochs=1.5"), 100, 5),  # ceil(1.5 * 3)
        (("train.gradient_accumulation=4", "train.epochs=1"), 1, 1),  # fewer batches than accumulation: still one step
    ],
)
def test_total_steps(overrides, rows, expected):
    assert total_steps(cfg.load(DEMO_CONFIG, list(overrides)), rows) == expected


def test_eval_interval():
    config = cfg.load(DEMO_CONFIG)  # eval_every_percent: 10
    assert eval_interval(config, 144) == 14
    assert eval_interval(config, 5) == 1  # never zero
    assert eval_interval(cfg.load(DEMO_CONFIG, ["train.eval_every_percent=100"]), 37) == 37
