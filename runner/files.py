"""Putting a finished directory in place of another, so readers see the old one or the new one, never half of either."""

from __future__ import annotations

import shutil
from pathlib import Path


def swap_in(staging: Path, final: Path, trash: Path) -> None:
    """Rename `staging` to `final`; an existing `final` is first renamed to `trash`, then deleted."""
    if not final.exists():
        staging.rename(final)
        return
    shutil.rmtree(trash, ignore_errors=True)
    final.rename(trash)
    staging.rename(final)
    shutil.rmtree(trash, ignore_errors=True)
