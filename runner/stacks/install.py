"""`python -m runner.stacks.install STACK VENV`: a virtual environment from a stack's lock, hash-checked.

Used by `make train` and `make test`. Refuses a missing, stale or hand-edited lock (naming the
command that makes it) before touching the environment; installs exactly the locked files
(`--require-hashes --no-deps`), then lockstep itself, then runs `pip check`: `--no-deps` installs
whatever the lock lists, so a lock that lacks a package some other one requires shows only there.
Indexes of the stack that do not answer from here are left out, with a note, so pip does not
spend minutes retrying them; pip then finds those packages in its own configured sources or
says which it could not find.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from runner import stacks
from runner.errors import StackError, run_command
from runner.stacks import indexes
from runner.util.hashing import file_sha256

REPO_ROOT = stacks.LOCKFILES.parent
STACK_MARKER = "lockstep-stack.json"  # in the environment: which stack it was installed from


def install(stack: stacks.Stack, venv: Path, wheelhouse: Path | None = None) -> None:
    """Make `venv` exactly the lock of `stack`; the marker, written last, says it is complete.
    `wheelhouse`: take every locked package from that directory and from no index."""
    problem = stack.lock_problem()  # first: a lock that cannot be trusted leaves the environment untouched
    if problem:
        raise StackError(problem)
    python = venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)], f"create the virtual environment {venv}")
    (venv / STACK_MARKER).unlink(missing_ok=True)  # an earlier install's: this one is not complete until the end
    sources = ["--no-index", f"--find-links={wheelhouse}"] if wheelhouse else indexes.extra_index_args(stack)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _install_lock(stack, [*pip, "--require-hashes", "--no-deps", *sources, "-r", str(stack.lock_file)])
    _run([*pip, "--no-deps", "-e", str(REPO_ROOT)], "install lockstep itself")
    _pip_check(stack, venv)
    marker = {"stack": stack.name, "lock_sha256": file_sha256(stack.lock_file)}
    (venv / STACK_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _install_lock(stack: stacks.Stack, command: list[str]) -> None:
    """pip checks every file against the lock before it installs any; a file whose sha256 is not
    the lock's (an index that now serves other bytes under the same name) stops it there."""
    result = subprocess.run(command, stderr=subprocess.PIPE, text=True, check=False)
    sys.stderr.write(result.stderr)
    if result.returncode == 0:
        return
    if "DO NOT MATCH THE HASHES" in result.stderr:
        raise StackError(
            f"refused to install stack {stack.name}: a file the index serves now is not the one its lock was made with "
            f"(pip's list of them is above), so nothing from the lock was installed. If the index rebuilt the file on "
            f"purpose, re-lock the stack with `nox -s lock -- {stack.name}` and review the diff; otherwise install from "
            f"a wheelhouse filled while the files were right (`nox -s wheelhouse -- {stack.name}`)"
        )
    raise StackError(f"could not install the lock of stack {stack.name} (command: {shlex.join(command)}); see pip's message above")


def _pip_check(stack: stacks.Stack, venv: Path) -> None:
    """`--no-deps` installs a lock that misses a requirement without a word; pip check names each one."""
    command = [str(venv / "bin" / "python"), "-m", "pip", "check", "--disable-pip-version-check"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    broken = "\n".join(f"  {line}" for line in lines) or f"  (no output; exit status {result.returncode})"
    raise StackError(
        f"the environment at {venv} is incomplete: `{shlex.join(command)}` found requirements that the lock of stack "
        f"{stack.name} ({stack.lock_file.name}) does not satisfy:\n{broken}\n"
        f"The lock itself must be fixed, not the environment: re-lock the stack with `nox -s lock -- {stack.name}`, "
        f"then install again with `python -m runner.stacks.install {stack.name} {venv}`"
    )


def _run(command: list[str], what: str) -> None:
    if subprocess.run(command, check=False).returncode != 0:
        raise StackError(f"could not {what} (command: {shlex.join(command)}); see pip's message above")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.stacks.install", description=__doc__.splitlines()[0])
    parser.add_argument("stack")
    parser.add_argument("venv", type=Path)
    parser.add_argument("--lockfiles", type=Path, default=stacks.LOCKFILES, metavar="DIR",
                        help="the directory of stacks.toml and the locks (default: this checkout's lockfiles/)")
    parser.add_argument("--wheelhouse", type=Path, metavar="DIR",
                        help="install the lock's packages from this directory only (`nox -s wheelhouse`), no index")
    args = parser.parse_args(argv)
    return run_command(lambda: _install(args.stack, args.lockfiles, args.venv, args.wheelhouse))


def _install(stack: str, lockfiles: Path, venv: Path, wheelhouse: Path | None) -> int:
    install(stacks.get(stack, lockfiles), venv, wheelhouse)
    return 0


if __name__ == "__main__":
    sys.exit(main())
