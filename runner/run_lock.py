"""One writer per run directory: an OS lock on RUN/.lockstep.lock, held for the life of the process that writes the run.

- A second lockstep process that would write the same run (a second `train`, `--fresh`, a submission,
  `merge`) is refused with RunInUse (exit 14), naming the holder: host, pid, job, since when.
- The lock is the kernel's (flock), so it ends with the process that held it, however that process
  ends: a dead holder never blocks. On a shared filesystem (NFS, Lustre mounted with flock) it holds
  across nodes.
- A process the holder starts for the same run (the job in another stack's environment or in a
  container, torchrun's workers) inherits it: the holder's token travels in LOCKSTEP_RUN_LOCK, and a
  child whose token is the one in the lock file goes on while its parent holds the lock, then takes
  the lock over if the parent goes first.
- In a job of several processes only rank 0 takes it: the other ranks write nothing before rank 0 has
  prepared the run, and only into the checkpoint rank 0 opened.
- Readers (`monitor`, `report`, `status`) never take it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from runner.errors import OutputDirError, RunInUse
from runner.rundir import LOCK_FILE
from runner.util import console

TOKEN_ENV = "LOCKSTEP_RUN_LOCK"
# Which job the holder is, for the message a second writer gets.
JOB_VARS = {"SLURM_JOB_ID": "slurm job", "MODAL_TASK_ID": "modal task", "LOCKSTEP_SUBMISSION": "submission"}
# A filesystem without locks (some FUSE and object-store mounts) answers with one of these.
NO_LOCKS = (errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@dataclass
class _Held:
    handle: BinaryIO | None  # None where the filesystem has no locks
    token: str
    count: int = 1


_held: dict[Path, _Held] = {}  # this process's locks, by resolved run directory: holding one twice is one lock


@contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Hold the lock of `run_dir` (created if missing) for the block; RunInUse if another process holds it."""
    key = acquire(run_dir)
    try:
        yield
    finally:
        release(key)


def acquire(run_dir: Path) -> Path:
    """Take the lock of `run_dir` and return the key release() takes; RunInUse if another process holds it."""
    key = run_dir.resolve()
    if key in _held:
        _held[key].count += 1
        return key
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = (run_dir / LOCK_FILE).open("a+b")
    except OSError as exc:  # the run's first write: a directory that cannot take this file cannot take a checkpoint
        raise OutputDirError(unwritable_message(run_dir, exc)) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(handle)
        inherited = os.environ.get(TOKEN_ENV)
        if inherited and holder.get("token") == inherited:  # our parent holds it for this run
            _take_over_when_free(handle, inherited)
            _held[key] = _Held(handle, inherited)
            return key
        handle.close()
        raise RunInUse(in_use_message(run_dir, holder)) from None
    except OSError as exc:
        if exc.errno not in NO_LOCKS:
            raise
        handle.close()
        console.say(f"warning: {run_dir}'s filesystem cannot lock files ({exc.strerror}): a second lockstep writing this "
                    "run at the same time would not be stopped")
        _held[key] = _Held(None, "")
        return key
    token = os.environ.get(TOKEN_ENV) or uuid.uuid4().hex  # a child that took over keeps its parent's token
    _write_holder(handle, token)
    _held[key] = _Held(handle, token)
    os.environ[TOKEN_ENV] = token  # every process started from here on inherits the lock
    return key


def unwritable_message(run_dir: Path, exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != run_dir else ""
    return (f"cannot write the run directory {run_dir}: {exc.strerror}{where}; nothing was written. Choose an output_dir "
            "this user can create and write, on a filesystem mounted read-write (see `df` and `ls -ld` of its parents)")


def relock(run_dir: Path) -> None:
    """After the locked `run_dir` was moved aside (--fresh): hold the lock of the new, empty `run_dir` instead."""
    key = run_dir.resolve()
    held = _held.pop(key, None)
    count = held.count if held else 1
    if held is not None and held.handle is not None:
        held.handle.close()  # the moved run's lock
    acquire(run_dir)
    _held[key].count = count


def release(key: Path) -> None:
    held = _held.get(key)
    if held is None:
        return
    held.count -= 1
    if held.count > 0:
        return
    del _held[key]
    if held.handle is not None:
        held.handle.close()  # closing the file releases the lock
    if not _held and os.environ.get(TOKEN_ENV) == held.token:
        del os.environ[TOKEN_ENV]


def in_use_message(run_dir: Path, holder: dict[str, Any]) -> str:
    who = describe(holder)
    pid, host = holder.get("pid"), holder.get("host")
    stop = f"stop it (kill {pid} on {host}; `lockstep cancel {run_dir}` for a scheduler job)" if pid else "stop it"
    return (f"{run_dir} is in use: {who} is writing this run; nothing was changed. Two processes writing one run would "
            f"interleave its metrics and checkpoints. Wait for it to finish (`lockstep monitor {run_dir}` shows it), or {stop} "
            "and run the same command again: it continues from the last checkpoint")


def describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another lockstep process (it has not written its name yet)"
    job = f", {holder['job']}" if holder.get("job") else ""
    return (f"lockstep `{holder.get('command', '?')}` (pid {holder['pid']} on {holder.get('host', '?')}{job}, "
            f"since {holder.get('since', '?')})")


def _write_holder(handle: BinaryIO, token: str) -> None:
    """Who holds the lock, written into the locked file itself (it is never replaced: the lock is on its inode)."""
    job = next((f"{what} {os.environ[name]}" for name, what in JOB_VARS.items() if os.environ.get(name)), None)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "job": job, "command": _command(),
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "token": token}
    handle.seek(0)
    handle.truncate()
    handle.write((json.dumps(record) + "\n").encode())
    handle.flush()


def _read_holder(handle: BinaryIO) -> dict[str, Any]:
    for _ in range(50):  # the holder writes its record right after taking the lock
        handle.seek(0)
        try:
            record = json.loads(handle.read() or b"null")
        except ValueError:
            record = None
        if isinstance(record, dict):
            return record
        threading.Event().wait(0.02)
    return {}


def _take_over_when_free(handle: BinaryIO, token: str) -> None:
    """Wait in the background for the parent to let the lock go, then hold it for this process."""

    def wait() -> None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            _write_holder(handle, token)
        except (OSError, ValueError):
            pass  # the process is ending (the file was closed)

    threading.Thread(target=wait, name="lockstep-run-lock", daemon=True).start()


def _command() -> str:
    """What the holder is, in the words a user typed: `lockstep train`, `python -m runner.job`."""
    program = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "python"
    if program in ("lockstep", "__main__"):
        return f"lockstep {sys.argv[1]}" if len(sys.argv) > 1 else "lockstep"
    return "python -m runner.job" if program in ("entry", "job") else program
