"""Checkpoint overhead: the share of training time spent writing checkpoints (`make bench`, `nox -s bench`).

Not a timed test: it reports, it does not judge speed. The demo model is so small that a
checkpoint costs about as much as many steps; small-llama shows a share closer to real runs.
"""

from __future__ import annotations

import pytest

from runner import config
from runner.job import run as job_run
from runner.training import checkpoint
from tests.helpers import DEMO_CONFIG

CASES = {
    "tiny-llama (demo)": (),
    "small-llama": ("model.name_or_path=builtin:small-llama", "train.max_steps=60", "train.learning_rate=1e-3"),
}


@pytest.mark.parametrize("case", CASES)
def test_checkpoint_overhead(benchmark, tmp_path, case):
    run_dir = tmp_path / "run"
    run_config = config.load(DEMO_CONFIG, (f"output_dir={run_dir}", *CASES[case]))
    summary = benchmark.pedantic(job_run.main, args=(run_config,), rounds=1, iterations=1)

    newest, _ = checkpoint.CheckpointStore(run_dir).newest_valid()
    size_mb = sum(f.stat().st_size for f in newest.path.iterdir()) / 2**20
    report = {
        "steps": summary["steps"],
        "checkpoints_saved": summary["checkpoints_saved"],
        "checkpoint_mb": round(size_mb, 2),
        "checkpoint_time_s": summary["checkpoint_time_s"],
        "train_time_s": summary["wall_time_s"],
        "checkpoint_share": summary["checkpoint_share"],
    }
    benchmark.extra_info.update(report)
    print(f"\n{case}: checkpoints take {report['checkpoint_share']:.1%} of training time "
          f"({report['checkpoints_saved']} saves of {size_mb:.1f} MiB, {report['checkpoint_time_s']:.2f} s "
          f"of {report['train_time_s']:.1f} s)")
    assert summary["checkpoints_saved"] >= 10  # every 10% of the steps, and the last one
    assert 0 < summary["checkpoint_share"] < 1
