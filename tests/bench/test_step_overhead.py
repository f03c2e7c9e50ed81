"""Per-step overhead: what lockstep adds to every optimizer step of the hf engine, each part timed on its own.

At each step the trainer calls lockstep's callbacks and its training_step: counting the step's
tokens, the save trigger (the background write's check, the policy, the stop flag), the metrics
row (peak memory, a line appended to metrics.jsonl) and the progress bar. Each is timed over many
calls with the real objects on a real run directory, and compared with the demo's median step time
measured in the same benchmark run (a short `lockstep train`). Not a timed test: it reports.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from runner.engines.hf_callbacks import MetricsCallback, ProgressCallback, TokenCounter
from runner.engines.hf_checkpoint import Checkpointer, SaveTrigger
from runner.training.checkpoint import CheckpointStore
from runner.training.metrics import MetricsLog
from runner.training.saver import Policy
from runner.training.signals import StopFlag
from tests.bench import measure
from tests.helpers import DEMO_CONFIG

CALLS = 2000


def test_per_step_overhead(benchmark, tmp_path, monkeypatch):
    demo = measure.lockstep_train(DEMO_CONFIG, tmp_path / "demo", "train.max_steps=40", "checkpoint.every_percent=100")
    assert demo.returncode == 0, demo.stderr[-3000:]
    step_s = demo.summary["wall_time_s"] / demo.summary["steps"]  # evaluations included: a conservative step

    parts = benchmark.pedantic(lambda: _time_parts(tmp_path / "parts", monkeypatch), rounds=1, iterations=1)
    report = {"demo_step_ms": round(step_s * 1000, 2), "calls": CALLS}
    for name, seconds in parts.items():
        report[f"{name}_us"] = round(seconds * 1e6, 1)
    total = sum(parts.values())
    report["total_us"] = round(total * 1e6, 1)
    report["share_of_demo_step"] = round(total / step_s, 4)
    benchmark.extra_info.update(report)
    print("\nper step: " + ", ".join(f"{name} {seconds * 1e6:.1f} us" for name, seconds in parts.items())
          + f"; together {total * 1e6:.0f} us, {total / step_s:.2%} of the demo's {step_s * 1000:.1f} ms step")
    assert total > 0 and all(seconds > 0 for seconds in parts.values())


def _time_parts(run_dir: Path, monkeypatch) -> dict[str, float]:
    run_dir.mkdir(parents=True)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # the bar draws as it would, into memory
    args = SimpleNamespace(device="cpu")
    state = SimpleNamespace(global_step=0, max_steps=CALLS * 10, epoch=0.0, is_world_process_zero=True)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    tokens = TokenCounter()
    mask = torch.ones(4, 96, dtype=torch.long)
    checkpointer = Checkpointer(CheckpointStore(run_dir), Policy(every_percent=100, every_minutes=30, total_steps=CALLS * 10),
                                keep_last=3, meta={}, after_checkpoint=None)
    trigger = SaveTrigger(checkpointer, StopFlag())
    metrics = MetricsCallback(MetricsLog(run_dir, total_steps=CALLS * 10), tokens)
    progress = ProgressCallback()
    progress.on_train_begin(args, state, control)
    logs = {"loss": 1.2345, "learning_rate": 1e-4, "grad_norm": 0.5, "epoch": 0.1}

    def count() -> None:
        tokens.add(mask.sum())

    def save_trigger() -> None:
        trigger.on_step_end(args, state, control)

    def metrics_row() -> None:
        metrics.on_log(args, state, control, logs=logs)

    def progress_bar() -> None:
        progress.on_step_end(args, state, control)
        progress.on_log(args, state, control, logs=logs)

    timed = {}
    for name, part in (("token_count", count), ("save_trigger", save_trigger), ("metrics_row", metrics_row), ("progress_bar", progress_bar)):
        started = time.perf_counter()
        for step in range(1, CALLS + 1):
            state.global_step = step
            part()
        timed[name] = (time.perf_counter() - started) / CALLS
    progress.close()
    return timed
