"""Submitted jobs on disk: each submission's files and handle live in RUN/jobs/<submission_id>/,
so `lockstep status|logs|cancel RUN` find the job from the run directory alone."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from runner.backends.base import JobHandle, Submission
from runner.rundir import JOB_HANDLE as HANDLE_FILE
from runner.rundir import JOBS_DIR
from runner.util.files import write_atomic


def new_submission_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def write_files(job_dir: Path, submission: Submission) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    for name, text in submission.files.items():
        write_atomic(job_dir / name, text)


def save(handle: JobHandle) -> None:
    record = asdict(handle) | {"job_dir": str(handle.job_dir)}
    write_atomic(handle.job_dir / HANDLE_FILE, json.dumps(record, indent=2) + "\n")


def latest(run_dir: Path) -> JobHandle | None:
    """The run's most recent submission, or None if it was never submitted to a scheduler."""
    handles = sorted((run_dir / JOBS_DIR).glob(f"*/{HANDLE_FILE}"))
    if not handles:
        return None
    record = json.loads(handles[-1].read_text())
    return JobHandle(backend=record["backend"], job_id=record["job_id"], job_dir=handles[-1].parent,
                     submitted_at=record["submitted_at"], details=record.get("details") or {})


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
