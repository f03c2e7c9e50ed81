"""Drift: the distributions installed in this environment against a stack's lock.

Drift is every locked package missing or at another version, and every package installed that
the lock does not list. `python -m runner.stacks.drift STACK` prints the comparison as JSON (used by
`nox -s compat` inside a fresh environment); the manifest records it at every train start.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from runner import stacks
from runner.errors import run_command

# Installed without being in the lock, and not drift: what `python -m venv` brings (pip, setuptools
# on older Pythons, wheel in some images) and lockstep itself, which runner.stacks.install adds beside the lock.
EXEMPT = frozenset({"pip", "setuptools", "wheel", "lockstep"})


def locked_for_here(lock_text: str) -> dict[str, str]:
    """The lock's pins whose environment markers hold here (a universal lock pins per platform)."""
    wanted = {}
    for line in lock_text.splitlines():
        if not line[:1].isalnum():
            continue
        try:
            requirement = Requirement(line.rstrip(" \\"))
        except InvalidRequirement:
            continue
        if requirement.marker is None or requirement.marker.evaluate():
            version = next(iter(requirement.specifier)).version
            wanted[stacks.normalize(requirement.name)] = version
    return wanted


def installed() -> dict[str, str]:
    found = {}
    for distribution in importlib.metadata.distributions():
        name, version = _name_and_version(distribution)
        if name:
            found[stacks.normalize(name)] = version
    return found


def _name_and_version(distribution: importlib.metadata.Distribution) -> tuple[str | None, str]:
    """Read from METADATA's header lines: parsing every file as an email message (what .metadata
    does) takes seconds in an environment of a few hundred packages."""
    text = distribution.read_text("METADATA") or distribution.read_text("PKG-INFO") or ""
    header = text.split("\n\n", 1)[0]
    name, version = re.search(r"^Name: *(.+?) *$", header, re.MULTILINE), re.search(r"^Version: *(.+?) *$", header, re.MULTILINE)
    if name and version:
        return name.group(1), version.group(1)
    return distribution.metadata["Name"], distribution.version


def compare(locked: dict[str, str], present: dict[str, str]) -> dict[str, Any]:
    """What differs from the lock, both ways: locked packages missing or at another version, and packages
    the lock does not list (`extra`, as `name==version`), but for those a virtual environment brings
    itself or lockstep installs beside the lock (EXEMPT; a lock that pins one is held to its pin)."""
    missing = sorted(name for name in locked if name not in present)
    changed = {name: {"locked": locked[name], "installed": present[name]}
               for name in sorted(locked) if name in present and present[name] != locked[name]}
    extra = [f"{name}=={present[name]}" for name in sorted(present) if name not in locked and name not in EXEMPT]
    return {"clean": not missing and not changed and not extra, "missing": missing, "changed": changed, "extra": extra}


def check(stack: stacks.Stack) -> dict[str, Any]:
    """This environment against the lock of `stack` (which must exist)."""
    return compare(locked_for_here(stack.lock_file.read_text()), installed())


def describe(result: dict[str, Any]) -> str:
    """One line for people; reads manifests recorded before `extra` was (they lack the key)."""
    parts = [f"{name} {c['installed']} (locked {c['locked']})" for name, c in result.get("changed", {}).items()]
    parts += [f"{name} missing" for name in result.get("missing", [])]
    parts += [f"{' '.join(entry.split('==', 1))} (not in the lock)" for entry in result.get("extra", [])]
    return "; ".join(parts) or "no drift"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.stacks.drift", description="This environment against a stack's lock, as JSON.")
    parser.add_argument("stack")
    args = parser.parse_args(argv)

    def show() -> int:
        print(json.dumps(check(stacks.get(args.stack)), indent=2))
        return 0

    return run_command(show)


if __name__ == "__main__":
    sys.exit(main())
