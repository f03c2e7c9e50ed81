"""What every backend's prepare() returns: the exact files and command, with no side effect yet."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Submission:
    files: Mapping[str, str]  # name -> contents, written before submitting (e.g. a job script)
    argv: tuple[str, ...]  # the command that submits or runs the job
    create_dirs: tuple[str, ...] = ()  # host directories that must exist first (mount sources)
