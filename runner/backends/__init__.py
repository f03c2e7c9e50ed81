"""Where a run executes. `local` and `docker` run in the foreground on this machine; `slurm` (and
`modal`) submit a job that outlives the command. Each backend module stands alone; SDKs are
imported only inside their own module."""

from __future__ import annotations

from runner.backends.base import Backend

FOREGROUND = ("local", "docker")
SCHEDULED = ("slurm", "modal")
NAMES = FOREGROUND + SCHEDULED


def scheduled(name: str) -> Backend:
    """The backend object of a scheduler backend, for submit/state/cancel/logs."""
    if name == "slurm":
        from runner.backends.slurm import Slurm

        return Slurm()
    if name == "modal":
        from runner.backends.modal_backend import Modal

        return Modal()
    raise ValueError(f"not a scheduler backend: {name}")  # a bug: callers check SCHEDULED
