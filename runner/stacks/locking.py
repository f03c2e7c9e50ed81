"""`nox -s lock [-- STACK ...]`: compile lockfiles/<stack>.in into the hash-locked lockfiles/<stack>.txt.

uv is the default engine (seconds, and it locks other platforms than this one); pip-tools'
pip-compile gives the same pins for this machine's platform, far more slowly. Either runs with
no configuration of this machine's (no uv.toml, no UV_* or PIP_* variables, no pip.conf): what
the stack declares is all that decides a lock. A stack's project_index projects come from that
index only, everything else from its index_url (see runner.stacks.local_index).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runner import stacks
from runner.errors import StackError, report, run_command
from runner.stacks import indexes, local_index
from runner.util import console
from runner.util.files import write_atomic

ENGINES = ("uv", "pip-tools")
KEPT_UV_VARIABLES = ("UV_CACHE_DIR",)  # where uv caches changes no lock


def compile_lock(stack: stacks.Stack, *, engine: str = "uv", find_links: Sequence[str] = (), output: Path | None = None) -> Path:
    """Write the lock of `stack` (to `output`, by default its lock file) and return its path.

    `find_links`: wheel directories standing in for the stack's project index where it cannot be
    reached; only its declared projects are taken from them."""
    if engine not in ENGINES:
        raise StackError(f"unknown lock engine {engine!r}; choose one of {', '.join(ENGINES)}")
    down = indexes.unreachable([stack.index_url])
    if down:
        raise StackError(f"stack {stack.name}: the index {stack.index_url} cannot be reached from here ({down[stack.index_url]}), "
                         f"so the stack cannot be locked on this machine. Lock it where that index is reachable, or reach it "
                         f"through a mirror: {indexes.MIRRORS_VARIABLE}='{stack.index_url}=https://your-mirror/simple'")
    with tempfile.TemporaryDirectory(prefix="lockstep-index-") as scratch:
        local = _local_index(stack, find_links, Path(scratch)) if stack.project_index else None
        try:
            body = _run_engine(stack, engine, local)
        except StackError as exc:
            if local is not None and local.fallback:
                raise StackError(f"stack {stack.name}: {stack.project_index.url} cannot be reached from here, and the wheels in "
                                 f"{', '.join(find_links)} do not replace it. {_ways_out(stack)} The resolver said: {exc}") from exc
            raise
    target = output or stack.lock_file
    write_atomic(target, (header(stack, body) + body).encode())  # bytes: the body digest covers exactly what is there
    return target


@dataclass(frozen=True)
class _LocalIndex:
    path: Path
    fallback: bool  # made from wheel folders, the project index being out of reach


def _local_index(stack: stacks.Stack, find_links: Sequence[str], scratch: Path) -> _LocalIndex:
    """The stack's project index as a local index of its declared projects: from the index itself,
    or from `find_links` where it cannot be reached; neither -> the error naming both ways out."""
    declared = stack.project_index
    down = indexes.unreachable([declared.url])
    if not down:
        return _LocalIndex(local_index.from_index(declared, scratch), fallback=False)
    if not find_links:
        raise StackError(f"stack {stack.name}: the index {declared.url}, the only source of {', '.join(declared.projects)}, "
                         f"cannot be reached from here ({down[declared.url]}), so the stack cannot be locked on this machine; "
                         f"{stack.lock_file.name} is left as it was. {_ways_out(stack)}")
    local_index.from_wheels(declared, find_links, scratch)
    held = ", ".join(f"{project} ({count})" for project, count in local_index.found(scratch).items() if count) or "none of them"
    console.say(f"{stack.name}: {declared.url} cannot be reached; its projects from {', '.join(find_links)} instead: {held}")
    return _LocalIndex(scratch, fallback=True)


def _ways_out(stack: stacks.Stack) -> str:
    return (f"Two ways out: lock it where that index is reachable (`nox -s lock -- {stack.name}`, or take the lock the "
            f"project's CI makes: {stacks.LOCK_WORKFLOW}), or pass `--find-links DIR` with a directory of its wheels "
            f"(a mirror of the index also works: {indexes.MIRRORS_VARIABLE}='{stack.project_index.url}=URL').")


def header(stack: stacks.Stack, body: str) -> str:
    """The comment lines above `body` (what uv or pip-compile produced): where the lock comes from, how to
    change it, and the digests lockstep checks, of the `.in` file and, on the last line, of `body` itself."""
    platform = "every platform (environment markers)" if stack.platforms == ("universal",) else ", ".join(stack.platforms)
    return (
        f"# Stack {stack.name}: {stack.requirements} locked for Python {stack.python} on {platform},\n"
        f"# from files uploaded before {stack.resolved_before}.\n"
        f"{_waiver(stack, body)}"
        f"# Every package is pinned with its sha256. Do not edit: change {stack.requirements}, then run\n"
        f"#   nox -s lock -- {stack.name}\n"
        f"# Install: pip install --require-hashes --no-deps -r lockfiles/{stack.name}.txt"
        f"{f' --extra-index-url {stack.extra_index_url}' if stack.extra_index_url else ''}\n"
        f"# input sha256: {stack.input_sha256()}\n"
        f"# Before installing, lockstep (and preflight) checks that everything below still has this sha256:\n"
        f"{stacks.BODY_HASH_LINE}{stacks.body_sha256(body)}\n"
    )


def _waiver(stack: stacks.Stack, body: str) -> str:
    """The header lines that say which packages the cut-off does not apply to, and why."""
    taken = [name for name in stacks.pins(body) if stack.project_index and name in stack.project_index.projects]
    if not taken:
        return ""
    them = "it" if len(taken) == 1 else "them"
    return (f"# {', '.join(taken)}: only from {stack.project_index.url},\n"
            f"# which records no upload times, so the cut-off is waived for {them}; {stack.requirements}\n"
            f"# and what it requires pin {them} exactly.\n")


def _run_engine(stack: stacks.Stack, engine: str, local: _LocalIndex | None) -> str:
    main_index = indexes.address(stack.index_url)
    if engine == "uv":
        target = ["--universal"] if stack.platforms == ("universal",) else [f"--python-platform={p}" for p in stack.platforms]
        if len(target) != 1:
            raise StackError(f"stack {stack.name}: give one platform (or \"universal\"), not {', '.join(stack.platforms)}")
        sources = [f"--default-index={main_index}"]
        if local is not None:
            sources += [f"--index=project-index={local.path.as_uri()}",
                        *(f"--exclude-newer-package={project}=false" for project in stack.project_index.projects)]
        command = [_tool("uv"), "pip", "compile", stack.requirements, "--no-config", "--generate-hashes", "--no-header",
                   "--quiet", "--refresh", f"--exclude-newer={stack.resolved_before}", f"--python-version={stack.python}",
                   *target, *sources]
        env = {key: value for key, value in os.environ.items() if not key.startswith("UV_") or key in KEPT_UV_VARIABLES}
    else:
        # pip has no per-package index: PyTorch's projects are searched in both indexes, and checked below.
        sources = [f"--index-url={main_index}", *([f"--extra-index-url={local.path.as_uri()}"] if local else [])]
        command = [_tool("pip-compile"), stack.requirements, "--generate-hashes", "--no-header", "--quiet",
                   "--allow-unsafe", "--strip-extras", f"--pip-args=--uploaded-prior-to={stack.resolved_before}",
                   *sources, "--output-file=-"]
        env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf: no configured index, wheel folder or constraint
    # Run beside the .in file so the `# via -r cpu.in` annotations carry no machine path.
    result = subprocess.run(command, cwd=stack.root, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise StackError(f"stack {stack.name}: {engine} could not lock it: {result.stderr.strip()[-3000:]}")
    if local is not None:
        _check_project_sources(stack, result.stdout, local.path)
    return result.stdout


def _check_project_sources(stack: stacks.Stack, body: str, local: Path) -> None:
    """Every hash of a project_index project must be one of that index's files: proof that it came
    from there (and not from PyPI, which may serve the same version under other hashes)."""
    served = set(re.findall(r"#sha256=([0-9a-f]{64})", "".join(page.read_text() for page in local.glob("*/index.html"))))
    for name, entry in stacks.entries(body).items():
        if name in stack.project_index.projects:
            strays = set(stacks.HASH.findall(entry)) - served
            if strays:
                raise StackError(f"stack {stack.name}: the lock would take {name} from another index than "
                                 f"{stack.project_index.url} (sha256 {', '.join(sorted(strays))}); lock it with uv, the default engine")


def _shown(path: Path) -> str:
    return str(path.resolve().relative_to(Path.cwd())) if path.resolve().is_relative_to(Path.cwd()) else str(path)


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name  # the tool installed in this environment
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise StackError(f"{name} is not installed; `pip install {'uv' if name == 'uv' else 'pip-tools'}`")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nox -s lock --", description="Compile stack locks (all stacks by default).")
    parser.add_argument("stacks", nargs="*", help="stack names from lockfiles/stacks.toml")
    parser.add_argument("--engine", choices=ENGINES, default="uv")
    parser.add_argument("--find-links", action="append", default=None, metavar="DIR",
                        help="wheels standing in for a project index (PyTorch's) that cannot be reached; only its declared "
                             "projects are taken from them (default: pip's configured find-links)")
    parser.add_argument("--lockfiles", type=Path, default=stacks.LOCKFILES, metavar="DIR",
                        help="the directory of stacks.toml, the .in files and the locks (default: this checkout's lockfiles/)")
    args = parser.parse_args(argv)
    return run_command(lambda: _lock_all(args.stacks, args.engine, args.find_links, args.lockfiles))


def _lock_all(names: Sequence[str], engine: str, find_links: Sequence[str] | None, root: Path) -> int:
    """Lock each stack named (every stack by default); one that cannot be locked does not stop the others."""
    names = list(names) or list(stacks.load(root))
    links = find_links if find_links is not None else indexes.pip_find_links()
    failures = []
    for name in names:
        try:
            path = compile_lock(stacks.get(name, root), engine=engine, find_links=links)
            console.say(f"locked {name}: {_shown(path)}")
        except StackError as exc:
            failures.append(exc)
    for failure in failures:
        report(failure)
    return StackError.exit_code if failures else 0


if __name__ == "__main__":
    sys.exit(main())
