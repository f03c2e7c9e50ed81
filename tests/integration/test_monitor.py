"""`lockstep monitor` on a run being written: the real demo trains in the background while the monitor,
a separate process as in another terminal, shows its progress, then follows it to the end by itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from runner.training import metrics
from tests.helpers import DEMO_CONFIG, REPO_ROOT, run_lockstep, start_lockstep
from tests.integration.run_checks import wait_until

pytestmark = pytest.mark.slow


def train_steps(run_dir) -> list[int]:
    return [row["step"] for row in metrics.read(run_dir) if row["loss"] is not None]


def test_monitor_shows_a_run_in_progress_and_follows_it_to_the_end(tmp_path):
    run_dir = tmp_path / "demo run"
    log = tmp_path / "train.log"
    training = start_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", stderr_to=log)
    watcher = None
    try:
        wait_until(lambda: len(train_steps(run_dir)) >= 2 and not (run_dir / "summary.json").exists(), training, "two train steps")
        # The demo takes seconds: paused while the monitor reads, the run is certainly caught mid-way.
        training.send_signal(signal.SIGSTOP)
        try:
            once = run_lockstep("monitor", str(run_dir), "--once", timeout=120)
        finally:
            training.send_signal(signal.SIGCONT)
        assert once.returncode == 0, once.stderr
        frame = once.stdout
        total = metrics.read_plan(run_dir)["total_steps"]
        shown = re.search(rf"^progress +step (\d+)/{total} +\[", frame, re.MULTILINE)
        assert shown and 2 <= int(shown.group(1)) < total, frame
        assert re.search(r"^time .*ETA \d+(s|m\d\ds)", frame, re.MULTILINE), frame
        assert re.search(r"^train loss +\d+\.\d{4} ", frame, re.MULTILINE), frame
        assert " · training" in frame.splitlines()[0] and "\x1b" not in frame

        # Left running, the monitor stops by itself once the run has finished.
        watcher = subprocess.Popen([sys.executable, "-m", "runner", "monitor", str(run_dir), "--refresh", "0.5"], cwd=REPO_ROOT,
                                   env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert training.wait(timeout=600) == 0, log.read_text()[-3000:]
        out, err = watcher.communicate(timeout=60)
        assert watcher.returncode == 0 and err == "", err
        frames = out.strip().split("\n\n")  # not a terminal: frames follow each other, a blank line apart
        assert len(frames) >= 2 and " · training" in frames[0].splitlines()[0], out[:3000]
        assert " · finished" in frames[-1].splitlines()[0] and f"step {total}/{total}" in frames[-1], frames[-1]
    finally:
        for process in (training, watcher):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    final = run_lockstep("monitor", str(run_dir), "--once")
    assert final.returncode == 0, final.stderr
    assert " · finished" in final.stdout and f"step {total}/{total}" in final.stdout and "100.0%" in final.stdout
    assert re.search(r"^checkpoint +step \d+, written", final.stdout, re.MULTILINE) and "ETA" not in final.stdout
