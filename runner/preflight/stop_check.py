"""Whether a stop signal's checkpoint is durable before the platform kills the job.

A stop (preemption, time limit, scancel) is a signal, then a kill after the platform's grace period;
lockstep writes the stop's checkpoint synchronously in between. Its time is estimated from the
configured model's checkpoint size and the write speed of the storage it goes to, measured here
by writing and syncing a probe file, and compared with the backend's grace period.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from runner.backends import limits, slurm
from runner.config import RunConfig
from runner.preflight.env_checks import checkpoint_bytes
from runner.preflight.memory import ModelShape
from runner.problems import Check

PROBE_BYTES = 16 * 2**20
SEALING_S = 2.0  # besides the writes: taking the state, hashing, renaming (well under a second on the demo) with a margin
MODAL_VOLUME_BYTES_S = 100e6  # not measurable from here: an assumed rate, said in the check
NAME = "checkpoint.stop"


def check(config: RunConfig, backend: str, shape: ModelShape | None, run_dir: Path) -> Check:
    grace = grace_period(config, backend)
    if grace is None:
        return Check(name=NAME, status="ok", summary=f"--backend {backend}: no kill follows a stop signal; the stop's checkpoint is not timed")
    grace_s, grace_source = grace
    if shape is None:
        return Check(name=NAME, status="ok", summary="checkpoint size unknown (model shape unknown): the stop's save is not timed")
    size = checkpoint_bytes(shape, config)
    if backend == "modal":
        speed, speed_source = MODAL_VOLUME_BYTES_S, f"an assumed {MODAL_VOLUME_BYTES_S / 1e6:.0f} MB/s to the volume"
    else:
        measured = write_speed(run_dir)
        if measured is None:
            return Check(name=NAME, status="ok", summary=f"the write speed of {run_dir} could not be measured: the stop's save is not timed")
        speed, speed_source = measured, f"{measured / 1e6:.0f} MB/s measured writing and syncing {PROBE_BYTES // 2**20} MiB there"
    estimate = size / speed + SEALING_S
    text = (f"a stop's checkpoint ({size / 2**20:,.0f} MiB) takes about {estimate:.1f} s at {speed_source}; "
            f"{grace_source} gives {grace_s:.0f} s")
    if estimate <= grace_s:
        return Check(name=NAME, status="ok", summary=text)
    return Check(name=NAME, status="warning", summary=f"{text}: the job may be killed before its checkpoint is durable",
                 fix="put output_dir on faster storage, lower lora.r, or give the job a longer grace period "
                     "(Slurm: the partition's GraceTime or KillWait); checkpoint.every_minutes bounds what a lost stop checkpoint costs")


def grace_period(config: RunConfig, backend: str) -> tuple[float, str] | None:
    """The seconds between a stop signal and the kill on `backend`, and where the figure comes from; None without a kill."""
    if backend == "modal":
        return limits.modal_preemption_grace_s(), "Modal's preemption (its exit grace period)"
    if backend == "docker":
        return limits.container_stop_grace_s(), "`docker stop` / `podman stop` (their default timeout)"
    if backend == "slurm":
        kill_wait, grace_time = slurm_kill_timing(config.slurm.partition)
        if kill_wait is None:
            kill_wait, source = limits.slurm_default_kill_wait_s(), "Slurm's default KillWait (scontrol not found here)"
        else:
            source = f"this cluster's KillWait ({kill_wait:.0f} s)" + (f" and the partition's GraceTime ({grace_time:.0f} s)" if grace_time else "")
        return kill_wait + (grace_time or 0), f"preemption or scancel on Slurm, after {source},"
    return None


def slurm_kill_timing(partition: str | None) -> tuple[float | None, float | None]:
    """(KillWait, the partition's preemption GraceTime) of the cluster `scontrol` reaches, or None where unknown
    (the default partition when none is named)."""
    if shutil.which("scontrol") is None:
        return None, None
    try:
        shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    kill_wait = re.search(r"^KillWait\s*=\s*(\d+)", shown.stdout, re.MULTILINE) if shown.returncode == 0 else None
    grace = (slurm.partition_limits(partition) or {}).get("GraceTime", "")
    return (float(kill_wait.group(1)) if kill_wait else None), (float(grace) if grace.isdigit() else None)


def write_speed(run_dir: Path) -> float | None:
    """Bytes per second of writing and syncing a probe file where the run's checkpoints go (removed after)."""
    existing = next((parent for parent in (run_dir, *run_dir.parents) if parent.is_dir()), None)
    if existing is None:
        return None
    block = os.urandom(2**20)
    try:
        with tempfile.NamedTemporaryFile(prefix=".lockstep-write-speed-", dir=existing) as probe:
            started = time.perf_counter()
            for _ in range(PROBE_BYTES // len(block)):
                probe.write(block)
            probe.flush()
            os.fsync(probe.fileno())
            seconds = time.perf_counter() - started
    except OSError:
        return None
    return PROBE_BYTES / seconds if seconds > 0 else None
