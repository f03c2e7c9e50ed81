"""Local runs in another stack's environment: a virtual environment made from that stack's lock
(hash-checked, once per lock, in lockstep's cache), in which the run's entry point is started.

This is how `lockstep train configs/demo-mlx.yaml` works from the `cpu` environment `make train`
made, and how a Mac runs MLX natively: MLX cannot use Metal inside a container, so the `mlx`
stack is a venv, never an image.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from runner import SOURCE_DIR, stacks
from runner.config import RunConfig
from runner.stacks import environment, install
from runner.util import cache, console
from runner.util.hashing import file_sha256

ENGINES_WITH_OWN_STACK = ("mlx",)  # engines whose libraries only their own stack has (no torch there)


def target(config: RunConfig) -> str | None:
    """The stack a local run must run in, when that is not this environment's: the config's `stack`,
    else the stack made for its engine (lockfiles/stacks.toml). None: this environment runs it."""
    wanted = config.stack
    if wanted is None and config.engine in ENGINES_WITH_OWN_STACK:
        wanted = next(name for name, stack in stacks.load().items() if stack.engine == config.engine)
    return None if wanted is None or wanted == environment.current_stack() else wanted


def location(stack: stacks.Stack) -> Path:
    """One environment per lock: a changed lock gets a new one, and an old one is never half-updated."""
    return cache.root() / "venvs" / f"{stack.name}-{file_sha256(stack.lock_file)[:12]}"


def python(stack: stacks.Stack) -> Path:
    """The interpreter of the stack's environment (which ensure() creates)."""
    return location(stack) / "bin" / "python"


def ensure(stack: stacks.Stack) -> Path:
    """The python of the stack's environment, creating the environment first if needed."""
    venv = location(stack)
    marker = venv / install.STACK_MARKER  # written by install() after everything else: its presence means complete
    if marker.is_file():
        return venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # two runs starting at once create it once
        if not marker.is_file():
            console.say(f"creating the environment of stack {stack.name} from its lock in {venv} (once per lock)")
            shutil.rmtree(venv, ignore_errors=True)  # what an interrupted creation left
            install.install(stack, venv)
    return venv / "bin" / "python"


def job_environment() -> dict[str, str]:
    """This process's environment, with this copy of lockstep first on the path: the cached environment
    is shared by every checkout on the machine, and its own install of lockstep may be another one's."""
    code = str(SOURCE_DIR)
    rest = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=code + (os.pathsep + rest if rest else ""))
