"""Which stack this environment was installed from, and whether it still matches that stack's lock.

`python -m runner.stacks.install` leaves a marker naming the stack in the environment; LOCKSTEP_STACK
overrides it (container images set it). Every train start records the result in the
manifest; `lockstep train --strict-env` refuses to train on drift.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from runner import stacks
from runner.errors import StackError
from runner.stacks import drift
from runner.stacks.install import STACK_MARKER
from runner.util.hashing import file_sha256


def current_stack() -> str | None:
    if os.environ.get("LOCKSTEP_STACK"):
        return os.environ["LOCKSTEP_STACK"]
    marker = Path(sys.prefix) / STACK_MARKER
    return json.loads(marker.read_text())["stack"] if marker.is_file() else None


def container_stack(requested: str | None) -> str:
    """The stack a container backend runs: the config's, else this environment's, else cpu."""
    return requested or current_stack() or "cpu"


def describe() -> dict[str, Any]:
    """The stack, its lock's sha256 and the drift of this environment from it."""
    name = current_stack()
    if name is None:
        return {"stack": None, "lock_sha256": None, "drift": None}
    stack = stacks.get(name)
    problem = stack.lock_problem()
    if problem:  # an environment of a stack whose lock is missing or stale proves nothing
        raise StackError(f"this environment belongs to stack {name}, but {problem}")
    return {"stack": name, "lock_sha256": file_sha256(stack.lock_file), "drift": drift.check(stack)}


def require_exact(environment: dict[str, Any]) -> None:
    """--strict-env: refuse an environment that is not exactly a stack's lock."""
    if environment["stack"] is None:
        raise StackError(
            "--strict-env: this environment was not installed from a stack; create it with "
            "`python -m runner.stacks.install STACK VENV` (as `make train` does) or set LOCKSTEP_STACK"
        )
    if not environment["drift"]["clean"]:
        raise StackError(
            f"--strict-env: this environment differs from the lock of stack {environment['stack']}: "
            f"{drift.describe(environment['drift'])}. Reinstall it with `python -m runner.stacks.install "
            f"{environment['stack']} {sys.prefix}`, or drop --strict-env to train anyway (the manifest records the drift)"
        )
