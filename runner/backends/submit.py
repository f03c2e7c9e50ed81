"""Starting a run on its backend and finding a detached job again: `lockstep train --backend B`,
`lockstep status|logs|cancel RUN`.

Preflight checks the limits before anything is written or sent; `--dry-run` prints the exact files and
command and stops there. A run has at most one live job: a second submission while the first
is pending or running is refused, since both would write the same run directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from runner import backends, run_lock, rundir
from runner.backends import jobs
from runner.backends.base import Backend, JobHandle, JobState
from runner.errors import BackendError
from runner.rundir import load_summary
from runner.spec import JobSpec
from runner.util import console, shell


def claim(spec: JobSpec, backend_name: str) -> None:
    """Make the run directory this command's before anything is written into it: refuse one another lockstep
    process writes (exit 14) or one that holds something else (exit 5); --fresh moves the earlier run aside
    first. The lock is held until this process ends (a job it starts here inherits it)."""
    if spec.fresh:
        start_fresh(spec, backend_name)
    else:
        rundir.check_usable(spec.run_dir)
    run_lock.acquire(spec.run_dir)


def start_fresh(spec: JobSpec, backend_name: str) -> None:
    """--fresh: move the earlier run aside before anything new (preflight's report, a job) is written into its directory."""
    if backend_name == "modal":
        raise BackendError("--fresh cannot move a run aside inside a Modal volume; set another output_dir for a new run")
    if backends.get(backend_name).detached:
        _refuse_second_job(spec.run_dir)
    run_dir = spec.run_dir
    if not (run_dir.is_dir() and any(run_dir.iterdir())):
        return
    # A directory of lockstep's may be in use by another lockstep; one of someone else's cannot be.
    key = run_lock.acquire(run_dir) if rundir.is_run(run_dir) or (run_dir / rundir.LOCK_FILE).exists() else None
    console.say(f"--fresh: moved the earlier run to {rundir.move_aside(run_dir)}")
    if key is not None:
        run_lock.release(key)


def start(backend: Backend, spec: JobSpec, *, dry_run: bool) -> int:
    """Prepare `spec` on `backend` (its limits were checked by preflight) and submit it: a foreground backend
    runs it to its end (its exit code), a detached one leaves a job recorded in RUN/jobs/. --dry-run prints
    the exact files and command and stops there."""
    submission = backend.prepare(spec)
    if dry_run:
        for name, text in submission.files.items():
            print(f"# ---- {spec.job_dir / name}\n{text}", end="" if text.endswith("\n") else "\n")
        print(("# ---- submitted with\n" if submission.files else "") + shell.join(submission.argv))
        return 0
    if not backend.detached:
        return backend.submit(spec, submission).exit_code
    _refuse_second_job(spec.run_dir)
    jobs.write_files(spec.job_dir, submission)
    handle = backend.submit(spec, submission).handle
    if handle is None:  # a bug in the backend: a detached job must be found again
        raise BackendError(f"--backend {backend.name} started a job but returned no handle for it")
    jobs.save(handle)
    print(handle.job_id)
    console.say(f"submitted {backend.name} job {handle.job_id} for {spec.run_dir}\n"
                f"  lockstep status {shell.quote(str(spec.run_dir))}\n  lockstep logs {shell.quote(str(spec.run_dir))} --follow")
    return 0


def status(run_dir: Path) -> int:
    rundir.check_run_dir(run_dir)
    handle = jobs.latest(run_dir)
    summary = load_summary(run_dir)
    progress = "complete" if summary else _progress(run_dir)
    if handle is None:
        print(f"run {run_dir}: {progress} (no scheduler job was submitted for it)")
        return 0
    state = job_state(handle)
    print(f"run {run_dir}: {progress}")
    print(f"{handle.backend} job {handle.job_id}: {state.state}" + (f" ({state.reason})" if state.reason else ""))
    if state.restarts:
        print(f"  restarts: {state.restarts}")
    if state.exit_code and not state.active:
        print(f"  exit code: {state.exit_code}")
    events = handle.job_dir / rundir.JOB_EVENTS
    if events.is_file():
        print("  last event: " + events.read_text().strip().splitlines()[-1])
    return 0


def logs(run_dir: Path, follow: bool) -> int:
    handle = _handle(run_dir)
    for line in backends.get(handle.backend).logs(handle, follow=follow):
        sys.stdout.write(line)
        sys.stdout.flush()
    return 0


def cancel(run_dir: Path) -> int:
    handle = _handle(run_dir)
    backends.get(handle.backend).cancel(handle)
    console.say(f"cancelled {handle.backend} job {handle.job_id}; its checkpoints stay in {run_dir}")
    return 0


def _handle(run_dir: Path) -> JobHandle:
    rundir.check_run_dir(run_dir)
    handle = jobs.latest(run_dir)
    if handle is None:
        raise BackendError(f"no scheduler job was submitted for {run_dir} (it has no jobs/ directory); "
                           "local and docker runs print their output where they run")
    return handle


def _refuse_second_job(run_dir: Path) -> None:
    previous = jobs.latest(run_dir)
    if previous is None:
        return
    state = job_state(previous)
    if state.state == "UNKNOWN":
        console.say(f"warning: cannot tell whether {previous.backend} job {previous.job_id} still runs ({state.reason}); submitting anyway")
    if state.active:
        raise BackendError(f"{previous.backend} job {previous.job_id} is already {state.state} for {run_dir}; two jobs would "
                           f"write the same run. Wait for it, or stop it first: lockstep cancel {shell.quote(str(run_dir))}")


def job_state(handle: JobHandle) -> JobState:
    try:
        return backends.get(handle.backend).state(handle)
    except Exception as exc:  # the scheduler or platform could not be asked (no cluster, no Modal token...)
        return JobState(state="UNKNOWN", reason=f"could not ask {handle.backend}: {type(exc).__name__}: {exc}")


def _progress(run_dir: Path) -> str:
    from runner.training import metrics

    rows = metrics.read(run_dir)
    return f"not finished, last logged step {rows[-1]['step']}" if rows else "not started"
