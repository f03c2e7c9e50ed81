"""The run directory: the names of what lockstep keeps there, whether a directory holds a run, and moving a run aside.

Writers (the job, preflight, submissions) and readers (monitor, report, status) both use these names.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runner.errors import OutputDirError

CONFIG_FILE = "config.yaml"  # the resolved config, rewritten at every start
MANIFEST_FILE = "manifest.json"  # the latest attempt's environment
ATTEMPTS_FILE = "attempts.jsonl"  # every attempt's, one line each
CHECKPOINTS_DIR = "checkpoints"  # step-NNNNNNNN/, each sealed by its COMPLETE.json (runner.training.checkpoint)
METRICS_FILE = "metrics.jsonl"  # a row per logging event, appended as training goes
EVENTS_FILE = "events.jsonl"  # a line per checkpoint (the loop's wait, the write's time) and per stop (signal to durable)
METRICS_CSV = "metrics.csv"  # the same rows, written when a run stops or finishes
PLAN_FILE = "plan.json"  # what the run will do, known once the data is read: {"total_steps": N}
PLOTS_DIR = "plots"
SUMMARY_FILE = "summary.json"  # written last: its presence means the run finished
ADAPTER_DIR = "adapter"  # the final adapter (PEFT's format; mlx-lm's for engine mlx)
PEFT_DIR = "adapter_peft"  # an mlx run's adapter in PEFT's format
MERGED_DIR = "merged_model"  # `lockstep merge`: the base model with the adapter merged in
REPORT_FILE = "report.html"  # `lockstep report`
TRACKING_FILE = "tracking.json"  # the tracker run ids a resumed run continues
TENSORBOARD_DIR = "tensorboard"
TRAINER_DIR = ".trainer"  # the HF trainer's own output_dir: it writes nothing there (lockstep saves the checkpoints)
JOBS_DIR = "jobs"  # jobs/<submission>/: a scheduler submission's files (runner.backends.jobs)
JOB_HANDLE = "handle.json"  # in jobs/<submission>/: how to find the job again
JOB_EVENTS = "events.jsonl"  # in jobs/<submission>/: what the Slurm job script recorded (stops, requeues)
PREFLIGHT_REPORT = "preflight_report.json"
RECOMMENDED_CONFIG = "recommended_config.yaml"
LOCK_FILE = ".lockstep.lock"  # runner.run_lock: one writer at a time
# Written before a run starts (scheduler submissions, preflight's report, the lock): not the run itself.
BEFORE_RUN = frozenset({JOBS_DIR, PREFLIGHT_REPORT, RECOMMENDED_CONFIG, LOCK_FILE})
# Only a run that has started has one of these.
RUN_MARKS = frozenset({CONFIG_FILE, ATTEMPTS_FILE, MANIFEST_FILE, CHECKPOINTS_DIR})


def has_run_content(run_dir: Path) -> bool:
    """Whether `run_dir` holds anything besides what is written before a run starts."""
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputDirError(f"output_dir {run_dir} exists and is not a directory; choose another output_dir")
    return run_dir.is_dir() and any(entry.name not in BEFORE_RUN for entry in run_dir.iterdir())


def is_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a run that has started (it may be finished, stopped or training)."""
    return run_dir.is_dir() and any((run_dir / name).exists() for name in RUN_MARKS)


def check_usable(run_dir: Path) -> None:
    """OutputDirError (exit 5) if `run_dir` holds files that are not a lockstep run: nothing may be written there."""
    if has_run_content(run_dir) and not is_run(run_dir):
        others = sorted(entry.name for entry in run_dir.iterdir() if entry.name not in BEFORE_RUN)
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise OutputDirError(
            f"output_dir {run_dir} is not empty and holds no lockstep run ({shown}); nothing was written there. "
            "Choose a new directory, or pass --fresh to move its contents aside"
        )


def check_run_dir(run_dir: Path) -> None:
    """RUN must be a run directory (an empty one may be watched before the run starts)."""
    # Names only a lockstep run directory holds: a directory with none of them is the wrong path.
    run_files = {*RUN_MARKS, *BEFORE_RUN, METRICS_FILE, PLAN_FILE, SUMMARY_FILE}
    if not run_dir.exists():
        raise OutputDirError(f"{run_dir} does not exist: RUN is a run directory, the output_dir of its config "
                             "(e.g. runs/demo); check the path, or start the run first with `lockstep train CONFIG`")
    if not run_dir.is_dir():
        raise OutputDirError(f"{run_dir} is not a directory: RUN is a run directory, the output_dir of its config (e.g. runs/demo)")
    names = {path.name for path in run_dir.iterdir()}
    if names and not names & run_files:
        runs = sorted(path.name for path in run_dir.iterdir() if path.is_dir() and {p.name for p in path.iterdir()} & run_files)
        hint = f"; runs in it: {', '.join(runs[:5])}" if runs else ""
        raise OutputDirError(f"{run_dir} holds no lockstep run (no {CONFIG_FILE}, {METRICS_FILE} or jobs/): "
                             f"RUN is a run directory, the output_dir of its config{hint}")


def move_aside(run_dir: Path) -> Path:
    """Rename a run directory to a timestamped sibling; runs are never deleted."""
    if Path.cwd().resolve().is_relative_to(run_dir.resolve()):
        raise OutputDirError(
            f"--fresh would move {run_dir}, which holds the current directory, aside from under this command; "
            "run it from elsewhere (e.g. the parent directory, with output_dir naming the run by its path)"
        )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    resolved = run_dir.resolve()
    target = resolved.with_name(f"{resolved.name}.previous-{stamp}")
    suffix = 1
    while target.exists():
        target = resolved.with_name(f"{resolved.name}.previous-{stamp}-{suffix}")
        suffix += 1
    try:
        os.rename(resolved, target)
    except OSError as exc:
        raise OutputDirError(f"cannot move {run_dir} aside to {target}: {exc.strerror}; move or rename it yourself") from exc
    return target


def load_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished run, or None if the run has not finished."""
    path = run_dir / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def require_finished(run_dir: Path) -> dict[str, Any]:
    """The summary of a finished run; OutputDirError if `run_dir` holds none (its adapter would be missing)."""
    summary = load_summary(run_dir)
    if summary is None:
        raise OutputDirError(f"{run_dir} holds no finished run (no {SUMMARY_FILE}): the adapter is written when training ends; "
                             f"finish it with `lockstep train {run_dir / CONFIG_FILE}`")
    return summary
