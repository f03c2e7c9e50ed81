"""`nox -s wheelhouse -- STACK`: every wheel of a stack's lock in one directory, hash-verified.

An image build or a cluster environment then needs no network (many HPC compute nodes have
none): `pip install --require-hashes --no-deps --no-index --find-links wheelhouse/STACK -r
lockfiles/STACK.txt`. Wheels are fetched for the stack's platform, not this machine's, so a
Linux wheelhouse can be filled on a Mac; a `universal` stack is fetched for this machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from runner import stacks
from runner.errors import StackError, run_command
from runner.stacks import indexes
from runner.util import console
from runner.util.hashing import file_sha256

# x86_64-manylinux_2_28 (uv's platform name) -> the architecture and the glibc minor version
MANYLINUX = re.compile(r"^(x86_64|aarch64)-manylinux_2_(\d+)$")
# manylinux2014 and its elders, which wheels still use, are aliases of these glibc versions
LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


def default_dir(stack: stacks.Stack) -> Path:
    """wheelhouse/STACK beside the stack's lockfiles/ directory."""
    return stack.root.parent / "wheelhouse" / stack.name


def fill(stack: stacks.Stack, dest: Path | None = None) -> Path:
    """Download every wheel of the stack's lock into `dest` (default wheelhouse/STACK) and verify them."""
    problem = stack.lock_problem()
    if problem:
        raise StackError(problem)
    dest = dest or default_dir(stack)
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--require-hashes", "--no-deps",
        "--dest", str(dest), *platform_args(stack), *indexes.extra_index_args(stack), "-r", str(stack.lock_file),
    ]
    if subprocess.run(command).returncode != 0:
        raise StackError(
            f"could not download the wheels of stack {stack.name} into {dest}; pip said why above "
            "(a package index that cannot be reached from here, or a lock without wheels for the stack's platform)"
        )
    removed = verify(stack, dest)
    if removed:
        console.say(f"removed {len(removed)} file(s) that the current lock does not list: {', '.join(removed)}")
    return dest


def verify(stack: stacks.Stack, dest: Path) -> list[str]:
    """Check every file of `dest` against the lock's hashes; remove (and name) those the lock no
    longer lists, e.g. left from an older lock. pip checked what it downloaded; this also covers
    files that were already there."""
    allowed = set(stacks.HASH.findall(stack.lock_file.read_text()))
    removed = []
    for path in sorted(dest.iterdir()):
        if path.is_file() and path.suffix in (".whl", ".gz", ".zip") and file_sha256(path) not in allowed:
            path.unlink()
            removed.append(path.name)
    return removed


def platform_args(stack: stacks.Stack) -> list[str]:
    """pip's target options for the stack's platform; pip takes a platform tag literally, so
    every older manylinux tag that the target also runs is listed too."""
    if stack.platforms == ("universal",):
        return []
    tags = []
    for platform in stack.platforms:
        match = MANYLINUX.match(platform)
        if match is None:
            raise StackError(f"stack {stack.name}: cannot fetch wheels for platform {platform!r}; "
                             "fill its wheelhouse on a machine of that platform with `pip download`")
        arch, newest = match.group(1), int(match.group(2))
        for minor in range(newest, 4, -1):
            tags.append(f"manylinux_2_{minor}_{arch}")
            if minor in LEGACY_MANYLINUX:
                tags.append(f"{LEGACY_MANYLINUX[minor]}_{arch}")
        tags.append(f"linux_{arch}")  # PyTorch's +cpu/+cuXXX wheels carry the plain tag, not a manylinux one
    return ["--only-binary=:all:", "--implementation=cp", f"--python-version={stack.python}",
            *(f"--platform={tag}" for tag in tags)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nox -s wheelhouse --", description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="+", help="stack names from lockfiles/stacks.toml")
    parser.add_argument("--dest", type=Path, help="directory for the wheels (default: wheelhouse/STACK; one stack only)")
    parser.add_argument("--lockfiles", type=Path, default=stacks.LOCKFILES, metavar="DIR",
                        help="the directory of stacks.toml and the locks (default: this checkout's lockfiles/)")
    args = parser.parse_args(argv)
    if args.dest and len(args.stacks) > 1:
        parser.error("--dest takes one stack")
    return run_command(lambda: _fill_all(args.stacks, args.dest, args.lockfiles))


def _fill_all(names: Sequence[str], dest: Path | None, root: Path) -> int:
    for name in names:
        filled = fill(stacks.get(name, root), dest)
        files = [path for path in filled.iterdir() if path.is_file()]
        size = sum(path.stat().st_size for path in files) / 2**20
        console.say(f"wheelhouse of {name}: {filled} ({len(files)} files, {size:.0f} MiB, all in the lock)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
