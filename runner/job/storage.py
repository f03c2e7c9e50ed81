"""The after-checkpoint storage hook, handed to the job as data: the backend that starts a job names what to do
after each checkpoint in LOCKSTEP_STORAGE_HOOK (`KIND:ARGUMENT`), and the job builds the hook from that, knowing
nothing of how it was submitted.

Kinds: `modal-volume:NAME` commits the Modal volume NAME, so a container lost right after a checkpoint still
leaves it on the volume (the run directory lives there).
"""

from __future__ import annotations

import os

from runner.errors import ConfigError
from runner.training.saver import StorageHook

HOOK_ENV = "LOCKSTEP_STORAGE_HOOK"
MODAL_VOLUME = "modal-volume"


def modal_volume(name: str) -> str:
    """The hook spec that commits the Modal volume `name` after each checkpoint."""
    return f"{MODAL_VOLUME}:{name}"


def from_environment() -> StorageHook | None:
    """The hook the starting backend asked for, or None (local disks need none)."""
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return None
    kind, _, argument = spec.partition(":")
    if kind == MODAL_VOLUME and argument:
        return _commit_modal_volume(argument)
    raise ConfigError([f"{HOOK_ENV}={spec!r}: unknown storage hook; the one kind is {MODAL_VOLUME}:VOLUME_NAME"], source="environment")


def _commit_modal_volume(name: str) -> StorageHook:
    import modal

    volume = modal.Volume.from_name(name)
    return lambda _path: volume.commit()
