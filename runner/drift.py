"""Drift: the distributions installed in this environment against a stack's lock.

`python -m runner.drift STACK` prints the comparison as JSON (used by `nox -s compat` inside
a fresh environment); the manifest records it at every train start.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from runner import stacks


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
    """What differs from the lock; packages the lock does not mention (pip, lockstep itself) are not drift."""
    missing = sorted(name for name in locked if name not in present)
    changed = {name: {"locked": locked[name], "installed": present[name]}
               for name in sorted(locked) if name in present and present[name] != locked[name]}
    return {"clean": not missing and not changed, "missing": missing, "changed": changed}


def check(stack: stacks.Stack) -> dict[str, Any]:
    """This environment against the lock of `stack` (which must exist)."""
    return compare(locked_for_here(stack.lock_file.read_text()), installed())


def describe(result: dict[str, Any]) -> str:
    parts = [f"{name} {c['installed']} (locked {c['locked']})" for name, c in result["changed"].items()]
    parts += [f"{name} missing" for name in result["missing"]]
    return "; ".join(parts) or "no drift"


if __name__ == "__main__":
    print(json.dumps(check(stacks.get(sys.argv[1])), indent=2))
