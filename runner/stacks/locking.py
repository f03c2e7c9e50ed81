"""`nox -s lock [-- STACK ...]`: compile lockfiles/<stack>.in into the hash-locked lockfiles/<stack>.txt.

uv is the default engine (seconds, and it locks other platforms than this one); pip-tools'
pip-compile gives the same pins for this machine's platform, far more slowly.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from runner import stacks
from runner.errors import StackError, report, run_command
from runner.stacks import indexes
from runner.util import console
from runner.util.files import write_atomic

ENGINES = ("uv", "pip-tools")


def compile_lock(stack: stacks.Stack, *, engine: str = "uv", find_links: Sequence[str] = (), output: Path | None = None) -> Path:
    """Write the lock of `stack` (to `output`, by default its lock file) and return its path."""
    down = indexes.unreachable(stack.index_urls)
    if down and not find_links:
        raise StackError(f"stack {stack.name}: {_describe(down)}, so the stack cannot be locked on this machine. "
                         "Lock it where that index is reachable, or pass --find-links DIR with the wheels it serves")
    for url in down:
        console.say(f"{stack.name}: {url} cannot be reached; looking for its packages in {', '.join(find_links)}")
    try:
        body = _run_engine(stack, engine, [url for url in stack.index_urls if url not in down], find_links)
    except StackError as exc:
        if down:
            raise StackError(f"stack {stack.name}: {_describe(down)}, and the wheels in {', '.join(find_links)} do not replace it. "
                             f"Lock it where that index is reachable. The resolver said: {exc}") from exc
        raise
    target = output or stack.lock_file
    write_atomic(target, (header(stack, body) + body).encode())  # bytes: the body digest covers exactly what is there
    return target


def header(stack: stacks.Stack, body: str) -> str:
    """The comment lines above `body` (what uv or pip-compile produced): where the lock comes from, how to
    change it, and the digests lockstep checks, of the `.in` file and, on the last line, of `body` itself."""
    platform = "every platform (environment markers)" if stack.platforms == ("universal",) else ", ".join(stack.platforms)
    return (
        f"# Stack {stack.name}: {stack.requirements} locked for Python {stack.python} on {platform},\n"
        f"# from files uploaded before {stack.resolved_before}.\n"
        f"# Every package is pinned with its sha256. Do not edit: change {stack.requirements}, then run\n"
        f"#   nox -s lock -- {stack.name}\n"
        f"# Install: pip install --require-hashes --no-deps -r lockfiles/{stack.name}.txt"
        f"{''.join(f' --extra-index-url {url}' for url in stack.index_urls[1:])}\n"
        f"# input sha256: {stack.input_sha256()}\n"
        f"# Before installing, lockstep (and preflight) checks that everything below still has this sha256:\n"
        f"{stacks.BODY_HASH_LINE}{stacks.body_sha256(body)}\n"
    )


def _describe(down: dict[str, str]) -> str:
    return "; ".join(f"the index {url} cannot be reached from here ({reason})" for url, reason in down.items())


def _run_engine(stack: stacks.Stack, engine: str, index_urls: list[str], find_links: Sequence[str]) -> str:
    sources = [f"--index-url={index_urls[0]}"] if index_urls else ["--no-index"]
    sources += [f"--extra-index-url={url}" for url in index_urls[1:]] + [f"--find-links={link}" for link in find_links]
    if engine == "uv":
        target = ["--universal"] if stack.platforms == ("universal",) else [f"--python-platform={p}" for p in stack.platforms]
        if len(target) != 1:
            raise StackError(f"stack {stack.name}: give one platform (or \"universal\"), not {', '.join(stack.platforms)}")
        command = [_tool("uv"), "pip", "compile", stack.requirements, "--generate-hashes", "--no-header", "--quiet",
                   "--refresh", f"--exclude-newer={stack.resolved_before}", f"--python-version={stack.python}", *target, *sources]
    elif engine == "pip-tools":
        command = [_tool("pip-compile"), stack.requirements, "--generate-hashes", "--no-header", "--quiet",
                   "--allow-unsafe", "--strip-extras", f"--pip-args=--uploaded-prior-to={stack.resolved_before}",
                   *sources, "--output-file=-"]
    else:
        raise StackError(f"unknown lock engine {engine!r}; choose one of {', '.join(ENGINES)}")
    # Run beside the .in file so the `# via -r cpu.in` annotations carry no machine path.
    result = subprocess.run(command, cwd=stack.root, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"stack {stack.name}: {engine} could not lock it: {result.stderr.strip()[-3000:]}")
    return result.stdout


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
    parser.add_argument("--find-links", action="append", default=None,
                        help="a directory of wheels standing in for an unreachable index (default: pip's configured find-links)")
    args = parser.parse_args(argv)
    return run_command(lambda: _lock_all(args.stacks, args.engine, args.find_links))


def _lock_all(names: Sequence[str], engine: str, find_links: Sequence[str] | None) -> int:
    """Lock each stack named (every stack by default); one that cannot be locked does not stop the others."""
    names = list(names) or list(stacks.load())
    links = find_links if find_links is not None else indexes.pip_find_links()
    failures = []
    for name in names:
        try:
            path = compile_lock(stacks.get(name), engine=engine, find_links=links)
            console.say(f"locked {name}: {path.relative_to(stacks.LOCKFILES.parent)}")
        except StackError as exc:
            failures.append(exc)
    for failure in failures:
        report(failure)
    return StackError.exit_code if failures else 0


if __name__ == "__main__":
    sys.exit(main())
