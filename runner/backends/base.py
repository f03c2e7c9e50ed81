"""What backends share: the job spec they receive, the Submission prepare() returns, the handle
submit() returns, and the Backend protocol. Behaviour is shared through plain functions, not here."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from runner.config import RunConfig
from runner.problems import Problem


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One run to submit: the resolved config, and where it was asked for."""

    config: RunConfig
    config_path: Path  # absolute
    overrides: tuple[str, ...] = ()
    strict_env: bool = False
    cwd: Path  # absolute; relative paths in the config start here, on every backend
    submission_id: str  # names the job's directory, RUN/jobs/<submission_id>/

    @property
    def run_dir(self) -> Path:
        path = Path(self.config.output_dir).expanduser()
        return path if path.is_absolute() else self.cwd / path

    @property
    def job_dir(self) -> Path:
        return self.run_dir / "jobs" / self.submission_id


@dataclass(frozen=True, kw_only=True)
class Submission:
    files: Mapping[str, str]  # name -> contents, written before submitting (e.g. a job script)
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
class JobState:
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, PREEMPTED, UNKNOWN...
    reason: str = ""  # the scheduler's reason (e.g. BeginTime, Priority) or what is known
    restarts: int | None = None
    exit_code: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "SUSPENDED", "RESIZING")


class Backend(Protocol):
    name: ClassVar[str]

    def check(self, spec: JobSpec) -> list[Problem]: ...  # platform limits; no network
    def prepare(self, spec: JobSpec) -> Submission: ...  # pure: files and the command
    def submit(self, spec: JobSpec, submission: Submission) -> JobHandle: ...  # the one side effect
    def state(self, handle: JobHandle) -> JobState: ...
    def cancel(self, handle: JobHandle) -> None: ...
    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]: ...
