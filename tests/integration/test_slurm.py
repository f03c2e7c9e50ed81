"""`--backend slurm` on a real one-node Slurm cluster (slurm-wlm + munge, started by the tests): the demo
as one job of two processes (DDP over gloo, torchrun under srun) trains exactly like a local run, and
a job stopped twice, once by `scontrol requeue` (SIGTERM, as a preemption) and once by its time-limit
notice (SIGUSR2, after which it requeues itself), resumes each time and ends exactly the same."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.backends import jobs
from tests.helpers import DEMO_CONFIG, REPO_ROOT, TWO_PROCESS_ARGS, TWO_PROCESS_ENV
from tests.integration.run_checks import assert_same_training, logged_step

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLURM_ARGS = ("--backend", "slurm", "--set", "slurm.container=none", *TWO_PROCESS_ARGS)


def submit(cluster, run_dir: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "runner", "train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", *SLURM_ARGS, *args],
                            cwd=REPO_ROOT, env=cluster.env | TWO_PROCESS_ENV | {"PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def job_state(cluster, job_id: str) -> dict[str, str]:
    from runner.backends.slurm import parse_key_values

    return parse_key_values(cluster.run("scontrol", "show", "job", job_id, "--oneliner"))


def wait_for(condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def start_now_when_pending(cluster, job_id: str) -> None:
    """Slurm holds a requeued job for about two minutes (BeginTime); an administrator's nudge starts it
    sooner. Not in the same second as the requeue: slurmd refuses a start in the second its previous
    credential was revoked ("Job credential revoked"), and the job would fail."""
    wait_for(lambda: job_state(cluster, job_id)["JobState"] == "PENDING", "the requeued job to be pending")
    cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now+2")


def finished(cluster, job_id: str) -> bool:
    return job_state(cluster, job_id)["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")


def log_of(run_dir: Path, job_id: str) -> str:
    handle = jobs.latest(run_dir)
    return (handle.job_dir / f"slurm-{job_id}.out").read_text()


def monitor_once(cluster, run_dir: Path, monkeypatch, capsys) -> str:
    """One frame of `lockstep monitor RUN --once`, run in this process to catch the job quickly."""
    from runner.cli import main

    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    capsys.readouterr()
    assert main(["monitor", str(run_dir), "--once"]) == 0
    return capsys.readouterr().out


def test_demo_job_matches_the_local_two_process_run(slurm_cluster, two_process_reference, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "slurm run"
    job_id = submit(slurm_cluster, run_dir)
    # While the job runs, the monitor reads the run directory on the shared filesystem and the job's state from Slurm.
    wait_for(lambda: logged_step(run_dir) >= 1 or finished(slurm_cluster, job_id), "the first step")
    frame = monitor_once(slurm_cluster, run_dir, monkeypatch, capsys)
    assert f"slurm job {job_id}: RUNNING" in frame and re.search(r"^progress +step \d+/24 ", frame, re.MULTILINE), frame
    wait_for(lambda: finished(slurm_cluster, job_id), "the job to finish")
    state = job_state(slurm_cluster, job_id)
    assert state["JobState"] == "COMPLETED", log_of(run_dir, job_id)[-3000:]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([*(p.name for p in two_process_reference.iterdir()), "jobs"])
    assert_same_training(run_dir, two_process_reference, "(Slurm job vs local run)")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["backend"] == "slurm" and manifest["scheduler"]["SLURM_JOB_ID"] == job_id
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["attempts"] == 1

    status = subprocess.run([sys.executable, "-m", "runner", "status", str(run_dir)], cwd=REPO_ROOT,
                            env=slurm_cluster.env | {"PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True)
    assert status.returncode == 0 and "complete" in status.stdout and f"slurm job {job_id}: COMPLETED" in status.stdout


def requeue_twice_then_finish(cluster, run_dir: Path, job_id: str, reference: Path) -> None:
    """`scontrol requeue` (SIGTERM) at step 5, the time-limit notice (SIGUSR2) at step 12 of the second start:
    both checkpoint and exit 75, the job comes back and resumes, and ends as the uninterrupted reference."""
    wait_for(lambda: logged_step(run_dir) >= 5 or finished(cluster, job_id), "step 5")
    assert not finished(cluster, job_id), log_of(run_dir, job_id)[-3000:]
    cluster.run("scontrol", "requeue", job_id)  # SIGTERM to every process, as a preemption
    start_now_when_pending(cluster, job_id)

    wait_for(lambda: job_state(cluster, job_id)["Restarts"] == "1" and logged_step(run_dir) >= 12, "step 12 of the second start")
    cluster.run("scancel", "--signal=USR2", "--batch", job_id)  # the time-limit notice of --signal=B:USR2@...
    start_now_when_pending(cluster, job_id)

    wait_for(lambda: finished(cluster, job_id), "the job to finish")
    output = log_of(run_dir, job_id)
    state = job_state(cluster, job_id)
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "2", output[-3000:]
    events = [json.loads(line)["event"] for line in (jobs.latest(run_dir).job_dir / "events.jsonl").read_text().splitlines()]
    assert "stopped: preempted" in events and "requeue: time limit" in events and events[-1] == "exit 0"
    assert output.count("resuming from step-") == 2
    assert_same_training(run_dir, reference, "(Slurm job requeued twice vs uninterrupted local run)")
    assert json.loads((run_dir / "summary.json").read_text())["attempts"] == 3


@pytest.mark.extended  # the same stops and resume as the container test below, which make test runs (~90 s)
def test_requeue_and_time_limit_notice_resume_to_the_same_result(slurm_cluster, two_process_reference, tmp_path):
    run_dir = tmp_path / "requeued"
    job_id = submit(slurm_cluster, run_dir)
    requeue_twice_then_finish(slurm_cluster, run_dir, job_id, two_process_reference)


NO_APPTAINER = "apptainer is not installed (it is not packaged for Debian 12): this job runs where it is"


@pytest.mark.parametrize("runtime, command", [
    ("charliecloud", "ch-run"),
    pytest.param("apptainer", "apptainer exec", marks=[pytest.mark.apptainer,
                                                       pytest.mark.skipif(shutil.which("apptainer") is None, reason=NO_APPTAINER)]),
])
def test_inside_a_container_from_the_sif_the_job_is_requeued_twice_and_trains_the_same(
        slurm_cluster, cpu_sif, two_process_reference, tmp_path, runtime, command):
    run_dir = tmp_path / f"in {runtime} $HOME; 'q'"  # binds with hostile paths
    job_id = submit(slurm_cluster, run_dir, "--set", f"slurm.container={runtime}", "--set", f"slurm.image={cpu_sif}")
    script = (jobs.latest(run_dir).job_dir / "job.sbatch").read_text()
    assert command in script and str(cpu_sif.name) in script
    requeue_twice_then_finish(slurm_cluster, run_dir, job_id, two_process_reference)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    digest = (cpu_sif.parent / (cpu_sif.name + ".partition-sha256")).read_text().strip()
    assert manifest["image"] == {"ref": str(cpu_sif), "id": f"sha256:{digest}", "runtime": runtime}
    assert manifest["stack"] == "cpu" and manifest["drift"]["clean"]  # the image's environment, not this one's


def test_preflight_times_the_stop_checkpoint_against_this_cluster_s_kill_wait_and_grace_time(slurm_cluster, tmp_path):
    result = subprocess.run([sys.executable, "-m", "runner", "preflight", str(DEMO_CONFIG), "--set", f"output_dir={tmp_path / 'run'}",
                             *SLURM_ARGS, "--set", f"slurm.partition={slurm_cluster.partition}"],
                            cwd=REPO_ROOT, env=slurm_cluster.env | {"PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "checkpoint.stop" in line]
    # slurm.conf's KillWait=30 and the partition's GraceTime=5 (tests/slurm_cluster.py): 35 s from the signal to the kill
    assert "this cluster's KillWait (30 s) and the partition's GraceTime (5 s), gives 35 s" in line, line
    assert "MB/s measured writing and syncing 16 MiB" in line and line.lstrip().startswith("✓")
