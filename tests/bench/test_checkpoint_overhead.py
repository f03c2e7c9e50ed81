"""Checkpoint overhead: how long the training loop waits for its checkpoints (`make bench`, `nox -s bench`).

A save takes the state at the step boundary (tensors copied to host memory, small state written), which
the loop waits for, then writes and seals the checkpoint in the background while training goes on
(runner.training.saver.Saver). Each checkpoint's line in RUN/events.jsonl records both times.
Reported: the loop's time blocked per save and as a share of training (target <= 1%), and the
background write per save. The demo's checkpoints are 1 MiB; small-llama's 7 MiB; small-llama with a
rank-128 adapter's are ~100 MiB, where a save is not tiny; SmolLM2-135M-Instruct's (a real model, rank 16
on every linear layer of 30) about 60 MiB.

Not a timed test: it reports, it does not judge speed.
"""

from __future__ import annotations

import pytest

from runner import config
from runner.job import run as job_run
from runner.rundir import EVENTS_FILE
from runner.training import checkpoint
from runner.util import jsonl
from tests.bench import measure
from tests.helpers import DEMO_CONFIG

TARGET_SHARE = 0.01
SMALL_LLAMA = ("model.name_or_path=builtin:small-llama", "train.learning_rate=1e-3")
CASES = {
    "tiny-llama (demo)": (),
    "small-llama": (*SMALL_LLAMA, "train.max_steps=60"),
    "small-llama, LoRA rank 128": (*SMALL_LLAMA, "train.max_steps=30", "lora.r=128", "lora.alpha=256"),
    "SmolLM2-135M-Instruct (real)": measure.SMOLLM2,
}


@pytest.mark.parametrize("case", CASES)
def test_checkpoint_overhead(benchmark, tmp_path, case):
    run_dir = tmp_path / "run"
    run_config = config.load(DEMO_CONFIG, (f"output_dir={run_dir}", *CASES[case]))
    summary = benchmark.pedantic(job_run.main, args=(run_config,), rounds=1, iterations=1)

    newest, _ = checkpoint.CheckpointStore(run_dir).newest_valid()
    size_mb = sum(f.stat().st_size for f in newest.path.iterdir()) / 2**20
    saves = [line for line in jsonl.read(run_dir / EVENTS_FILE).records if line["event"] == "checkpoint"]
    assert len(saves) == summary["checkpoints_saved"] >= 10  # every 10% of the steps, and the last one
    report = {
        "steps": summary["steps"],
        "checkpoints_saved": summary["checkpoints_saved"],
        "checkpoint_mb": round(size_mb, 2),
        "blocked_per_save_ms": round(1000 * measure.median([s["loop_blocked_s"] for s in saves]), 1),
        "write_per_save_ms": round(1000 * measure.median([s["write_s"] for s in saves]), 1),
        "checkpoint_time_s": summary["checkpoint_time_s"],
        "train_time_s": summary["wall_time_s"],
        "checkpoint_share": summary["checkpoint_share"],
        "target_share": TARGET_SHARE,
    }
    benchmark.extra_info.update(report)
    print(f"\n{case}: the loop waits {report['blocked_per_save_ms']} ms per save, {report['checkpoint_share']:.1%} of training "
          f"(target <= {TARGET_SHARE:.0%}; {report['checkpoints_saved']} saves of {size_mb:.1f} MiB, each written in "
          f"{report['write_per_save_ms']} ms behind the loop; {report['train_time_s']:.1f} s of training)")
    assert 0 < summary["checkpoint_share"] < 1
