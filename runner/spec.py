"""JobSpec: one run as it was asked for (the resolved config, where from, how), what every backend receives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner.config import RunConfig
from runner.rundir import JOBS_DIR


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One run to start: the resolved config, and where it was asked for."""

    config: RunConfig
    config_path: Path  # absolute
    overrides: tuple[str, ...] = ()
    fresh: bool = False  # the earlier run is moved aside first (--fresh)
    strict_env: bool = False
    cwd: Path  # absolute; relative paths in the config start here, on every backend
    submission_id: str  # names the job's directory, RUN/jobs/<submission_id>/

    @property
    def run_dir(self) -> Path:
        path = Path(self.config.output_dir).expanduser()
        return path if path.is_absolute() else self.cwd / path

    @property
    def job_dir(self) -> Path:
        return self.run_dir / JOBS_DIR / self.submission_id
