"""`python -m runner.install STACK VENV`: a virtual environment from a stack's lock, hash-checked.

Used by `make train` and `make test`. Refuses a missing or stale lock (naming the command
that makes it); installs exactly the locked files (`--require-hashes --no-deps`), then
lockstep itself. Indexes of the stack that do not answer from here are left out, with a note,
so pip does not spend minutes retrying them; pip then finds those packages in its own
configured sources or says which it could not find.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from runner import indexes, stacks
from runner.errors import LockstepError, StackError, report
from runner.hashing import file_sha256

REPO_ROOT = stacks.LOCKFILES.parent
STACK_MARKER = "lockstep-stack.json"  # in the environment: which stack it was installed from


def install(stack: stacks.Stack, venv: Path) -> None:
    problem = stack.lock_problem()
    if problem:
        raise StackError(problem)
    python = venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)], f"create the virtual environment {venv}")
    extra = indexes.extra_index_args(stack)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "--require-hashes", "--no-deps", *extra, "-r", str(stack.lock_file)], f"install the lock of stack {stack.name}")
    _run([*pip, "--no-deps", "-e", str(REPO_ROOT)], "install lockstep itself")
    marker = {"stack": stack.name, "lock_sha256": file_sha256(stack.lock_file)}
    (venv / STACK_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _run(command: list[str], what: str) -> None:
    if subprocess.run(command).returncode != 0:
        raise StackError(f"could not {what} (command: {' '.join(command)}); see pip's message above")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.install", description=__doc__.splitlines()[0])
    parser.add_argument("stack")
    parser.add_argument("venv", type=Path)
    args = parser.parse_args(argv)
    try:
        install(stacks.get(args.stack), args.venv)
    except LockstepError as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
