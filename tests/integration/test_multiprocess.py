"""Two processes under torchrun (DDP over gloo on CPU): rank 0 writes, the others wait, and a stop
signal that reaches a single rank still stops every rank at the same step with one checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runner.training import checkpoint
from tests.helpers import DEMO_CONFIG, REPO_ROOT, TWO_PROCESS_ARGS, TWO_PROCESS_ENV
from tests.integration.run_checks import assert_same_training, logged_step, wait_until

pytestmark = pytest.mark.slow


def torchrun(run_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "runner", "train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", *TWO_PROCESS_ARGS]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    with log.open("wb") as stderr:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=stderr, stderr=subprocess.STDOUT)


def worker_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the training process of `rank` among the launcher's children."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    for pid in children:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no worker of rank {rank} among {children}")


def test_stop_on_one_rank_and_a_killed_rank_resume_exactly(tmp_path, two_process_reference):
    """Workers under a plain torchrun (lockstep's launcher not involved) vs the reference run through it."""
    reference = two_process_reference
    run_dir = tmp_path / "interrupted"
    # Attempt 1: Slurm-style SIGUSR2 to rank 1 alone. Attempt 2: SIGKILL of rank 0 (torchrun then stops rank 1).
    for attempt, (rank, sig, at_step) in enumerate(((1, signal.SIGUSR2, 8), (0, signal.SIGKILL, 16)), start=1):
        log = tmp_path / f"attempt-{attempt}.log"
        launcher = torchrun(run_dir, log)
        wait_until(lambda: logged_step(run_dir) >= at_step, launcher, f"step {at_step}", pause=0.01)
        os.kill(worker_pid(launcher, rank), sig)
        assert launcher.wait(timeout=300) != 0
        output = log.read_text()
        if sig == signal.SIGUSR2:
            assert output.count("lockstep: stopped:") == 2, output[-3000:]  # both ranks stopped and exit 75
            assert "a stop signal on another rank" in output
            newest, rejected = checkpoint.CheckpointStore(run_dir).newest_valid()
            assert rejected == [] and newest.step > at_step - 1
            names = {p.name for p in newest.path.iterdir()}
            assert {"rng_state_0.pth", "rng_state_1.pth", "optimizer.pt", "adapter_model.safetensors"} <= names

    final_log = tmp_path / "final.log"
    launcher = torchrun(run_dir, final_log)
    assert launcher.wait(timeout=600) == 0, final_log.read_text()[-3000:]
    assert "resuming from step-000000" in final_log.read_text()
    assert_same_training(run_dir, reference, "(two processes)")
    summary = (run_dir / "summary.json").read_text()
    assert '"world_size": 2' in summary and '"attempts": 3' in summary


def test_fsdp_trains_stops_and_resumes_exactly_like_ddp(tmp_path, two_process_reference):
    """FSDP over the same two processes (gloo on CPU): a time-limit notice sent to lockstep's node launcher
    reaches both workers, which checkpoint (whole tensors, gathered) and exit 75; the resumed run ends
    with the same metrics and adapter as the DDP reference."""
    run_dir = tmp_path / "fsdp"
    args = ("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", *TWO_PROCESS_ARGS, "--set", "distributed.strategy=fsdp")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **TWO_PROCESS_ENV)
    with (tmp_path / "first.log").open("wb") as log:
        launcher = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: logged_step(run_dir) >= 8, launcher, "step 8", pause=0.01)
    launcher.send_signal(signal.SIGUSR2)
    assert launcher.wait(timeout=300) == 75, (tmp_path / "first.log").read_text()[-3000:]  # torchrun said 1; the launcher says why
    second = subprocess.run([sys.executable, "-m", "runner", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from step-" in second.stderr
    assert_same_training(run_dir, two_process_reference, "(FSDP stopped and resumed vs DDP)")
