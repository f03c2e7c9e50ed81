"""Asking git about a checkout, for manifests and image labels; None where git or the checkout is missing."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(root: Path, *args: str) -> str | None:
    """The stripped output of `git -C root ARGS`, or None if it fails."""
    try:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None
