"""What backends share: the Submission prepare() returns, what submit() started, the handle of a detached
job, its state, and the Backend protocol. Behaviour is shared through plain functions, not here."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from runner.errors import BackendError
from runner.problems import Check
from runner.spec import JobSpec


@dataclass(frozen=True, kw_only=True)
class Submission:
    files: Mapping[str, str]  # name -> contents, written into RUN/jobs/<id>/ before submitting (e.g. a job script)
    argv: tuple[str, ...]  # the command that submits or runs the job
    create_dirs: tuple[str, ...] = ()  # host directories that must exist first (mount sources)


@dataclass(frozen=True, kw_only=True)
class JobHandle:
    """A submitted job, as recorded in RUN/jobs/<submission_id>/handle.json."""

    backend: str
    job_id: str
    job_dir: Path
    submitted_at: str
    details: Mapping[str, Any] = field(default_factory=dict)  # e.g. the log file, the Modal app


@dataclass(frozen=True, kw_only=True)
class Started:
    """What submit() did: a detached job (its handle), or a foreground run, over (its exit code)."""

    handle: JobHandle | None = None
    exit_code: int = 0


@dataclass(frozen=True, kw_only=True)
class JobState:
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, PREEMPTED, UNKNOWN...
    reason: str = ""  # the scheduler's reason (e.g. BeginTime, Priority) or what is known
    restarts: int | None = None
    exit_code: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "SUSPENDED", "RESIZING")


class Backend(Protocol):
    """Where a run executes. Foreground backends (local, docker) run it to its end in submit(); detached ones
    (slurm, modal) leave a job that outlives the command, found again from the run directory by its handle."""

    name: ClassVar[str]
    detached: ClassVar[bool]

    def check(self, spec: JobSpec) -> list[Check]: ...  # the platform's limits; no network, nothing written
    def prepare(self, spec: JobSpec) -> Submission: ...  # pure: the files and the command
    def submit(self, spec: JobSpec, submission: Submission) -> Started: ...  # the one side effect
    def state(self, handle: JobHandle) -> JobState: ...
    def cancel(self, handle: JobHandle) -> None: ...
    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]: ...


def no_job(backend: str) -> BackendError:
    """What a foreground backend says when asked about a job: it never leaves one behind."""
    return BackendError(f"--backend {backend} runs in the foreground and leaves no job to ask about; its output is where it ran")
