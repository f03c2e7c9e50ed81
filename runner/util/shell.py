"""The only place lockstep writes shell text: every value is quoted, whatever it contains."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def quote(value: str) -> str:
    """One shell word holding exactly `value`."""
    return shlex.quote(str(value))


def join(argv: Sequence[str]) -> str:
    """One command line; paths with spaces, quotes, `$` or `;` stay single arguments."""
    return " ".join(shlex.quote(str(arg)) for arg in argv)


def script(commands: Sequence[Sequence[str]], *, comment: str = "", cd_to_script_dir: bool = False) -> str:
    """A POSIX sh script running `commands` in order, stopping at the first failure."""
    lines = ["#!/bin/sh"]
    lines += [f"# {line}" if line else "#" for line in comment.splitlines()]
    lines.append("set -eu")
    if cd_to_script_dir:
        lines.append('cd "$(dirname "$0")"')
    lines += [join(command) for command in commands]
    return "\n".join(lines) + "\n"
