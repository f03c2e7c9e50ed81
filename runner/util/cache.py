"""lockstep's cache directory: built-in models and the environments of other stacks live there."""

from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    """LOCKSTEP_CACHE, else $XDG_CACHE_HOME/lockstep, else ~/.cache/lockstep."""
    if os.environ.get("LOCKSTEP_CACHE"):
        return Path(os.environ["LOCKSTEP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lockstep"
