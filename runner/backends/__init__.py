"""Where a run executes: one registry of the four backends, each behind the Backend protocol (base.py).
`local` and `docker` run in the foreground on this machine; `slurm` and `modal` submit a job that outlives
the command. Each backend module stands alone; SDKs are imported only inside their own module."""

from __future__ import annotations

import importlib

from runner.backends.base import Backend

# name -> (module, class): imported on first use, so `lockstep status` of a Slurm run loads nothing of Modal's
REGISTRY = {
    "local": ("runner.backends.local", "Local"),
    "docker": ("runner.backends.docker", "Docker"),
    "slurm": ("runner.backends.slurm", "Slurm"),
    "modal": ("runner.backends.modal_backend", "Modal"),
}
NAMES = tuple(REGISTRY)


def get(name: str) -> Backend:
    """The backend called `name` (one of NAMES: the command line offers no other)."""
    module, cls = REGISTRY[name]
    backend: Backend = getattr(importlib.import_module(module), cls)()
    return backend
