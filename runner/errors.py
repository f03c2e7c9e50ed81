"""The one error hierarchy of lockstep: each error carries the exit code the CLI returns."""

from __future__ import annotations

import sys
from collections.abc import Callable


class LockstepError(Exception):
    """A failure the user can act on: the message says what happened and what to do next."""

    exit_code = 1
    label = "error"  # how the CLI introduces the message


class ProblemsError(LockstepError):
    """Several problems found at once, each on its own line, under `where` and what was spared."""

    def __init__(self, where: str, problems: list[str], spared: str) -> None:
        self.problems = list(problems)
        lines = [f"{where}: {len(self.problems)} problem(s) found, {spared}:", *[f"  - {p}" for p in self.problems]]
        super().__init__("\n".join(lines))


class ConfigError(ProblemsError):
    """The run config is invalid; `problems` lists every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[str], source: str = "config") -> None:
        super().__init__(source, problems, "nothing was written")


class DataError(LockstepError):
    """Training data cannot be read or does not match the declared format."""

    exit_code = 3


class EngineError(LockstepError):
    """The selected engine cannot run in this environment (missing package, no GPU...)."""

    exit_code = 4


class OutputDirError(LockstepError):
    """The run directory cannot be used as asked (e.g. it belongs to another run)."""

    exit_code = 5


class CheckpointError(LockstepError):
    """A checkpoint could not be written; earlier checkpoints are intact."""

    exit_code = 6


class ResumeRefused(LockstepError):
    """The run directory holds a run started with a config that would train differently."""

    exit_code = 7


class StoppedForRequeue(LockstepError):
    """A stop signal arrived; a checkpoint was written and the run can continue from it.

    Exit code 75 (EX_TEMPFAIL): "checkpointed, requeue me". Schedulers and wrappers restart
    the same command, which resumes from that checkpoint.
    """

    exit_code = 75
    label = "stopped"


class StackError(LockstepError):
    """A stack is unknown, badly declared, or its lock is missing or stale."""

    exit_code = 8


class ImageError(LockstepError):
    """A container image cannot be built, exported or run (no tool, a failed build...)."""

    exit_code = 9


class LimitError(ProblemsError):
    """The run asks for something its backend cannot give; found before anything was submitted."""

    exit_code = 10

    def __init__(self, backend: str, problems: list[str]) -> None:
        super().__init__(f"--backend {backend}", problems, "nothing was submitted")


class BackendError(LockstepError):
    """A scheduler or platform refused or lost a job (sbatch failed, the job is unknown...)."""

    exit_code = 11


class PreflightError(LockstepError):
    """Preflight found a problem that would end the run (bad data, no memory, a missing lock...); nothing started."""

    exit_code = 12


class TrackingError(LockstepError):
    """An experiment tracker the config asks for (tracking.*) is not installed or cannot start; nothing was trained."""

    exit_code = 13


class RunInUse(LockstepError):
    """Another lockstep process is writing the run directory (the message names it); nothing was changed."""

    exit_code = 14


class ModelError(LockstepError):
    """The model the config names cannot be fetched, read or converted (a truncated or unsupported GGUF file, a
    download that failed or does not match its pinned sha256); nothing was trained and nothing half-made was kept."""

    exit_code = 15


def report(exc: LockstepError) -> int:
    """Print `exc` the way every lockstep command does and return its exit code."""
    print(f"lockstep: {exc.label}: {exc}", file=sys.stderr)
    return exc.exit_code


def run_command(action: Callable[[], int]) -> int:
    """Run a command's body: its LockstepError becomes its message and exit code, Ctrl-C exit 130."""
    try:
        return action()
    except LockstepError as exc:
        return report(exc)
    except KeyboardInterrupt:
        print("lockstep: interrupted", file=sys.stderr)
        return 130
