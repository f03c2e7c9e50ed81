"""One writer per run directory, through the real command: a second `train`, `--fresh` or submission while
a run trains is refused naming the holder, readers still read it, and a killed holder blocks nothing."""

from __future__ import annotations

import signal
import socket

import pytest

from runner.training import metrics
from tests.helpers import DEMO_CONFIG, run_lockstep, start_lockstep
from tests.integration.run_checks import assert_complete_run, logged_step, wait_until

pytestmark = pytest.mark.slow

IN_USE = 14


def test_a_second_writer_is_refused_while_a_run_trains_and_readers_still_read_it(tmp_path):
    run_dir = tmp_path / "run"
    args = ("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", "train.max_steps=30")
    first = start_lockstep(*args, stderr_to=tmp_path / "first.log")
    wait_until(lambda: logged_step(run_dir) >= 3, first, "step 3")
    first.send_signal(signal.SIGSTOP)  # holding the lock, mid-run
    try:
        second = run_lockstep(*args)
        assert second.returncode == IN_USE, second.stderr[-3000:]
        assert f"is in use: lockstep `lockstep train` (pid {first.pid} on {socket.gethostname()}" in second.stderr
        assert "nothing was changed" in second.stderr and "Traceback" not in second.stderr
        fresh = run_lockstep(*args, "--fresh")
        assert fresh.returncode == IN_USE, fresh.stderr[-3000:]
        assert not list(tmp_path.glob("run.previous-*"))  # the live run was not moved aside
        submitted = run_lockstep(*args, "--backend", "slurm")
        assert submitted.returncode == IN_USE, submitted.stderr[-3000:]
        for reader in (("monitor", str(run_dir), "--once"), ("report", str(run_dir)), ("status", str(run_dir))):
            read = run_lockstep(*reader)
            assert read.returncode == 0, (reader, read.stdout[-2000:], read.stderr[-2000:])
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
    steps = [row["step"] for row in metrics.read(run_dir) if row["loss"] is not None]
    assert steps == list(range(1, 31)), "every row once"
    assert assert_complete_run(run_dir, min_eval_drop=0.2)["attempts"] == 1


def test_a_killed_holder_blocks_nothing(tmp_path):
    run_dir = tmp_path / "run"
    args = ("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", "train.max_steps=20")
    first = start_lockstep(*args, stderr_to=tmp_path / "first.log")
    wait_until(lambda: logged_step(run_dir) >= 3, first, "step 3")
    first.send_signal(signal.SIGKILL)
    first.wait()
    resumed = run_lockstep(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert assert_complete_run(run_dir, min_eval_drop=0.1)["steps"] == 20
