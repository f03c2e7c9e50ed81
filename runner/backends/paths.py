"""The host paths a job reads and writes, for backends that must make them visible (mounts, binds)."""

from __future__ import annotations

import os
from pathlib import Path

from runner.config import BUILTIN_PREFIX, RunConfig


def inputs(config: RunConfig, config_path: Path, cwd: Path) -> list[Path]:
    """Files and directories the job reads: the config, data files and a local model."""
    refs = [str(config_path), config.data.train, config.data.valid, config.model.name_or_path]
    found = []
    for ref in refs:
        if ref and not ref.startswith(BUILTIN_PREFIX):
            path = absolute(ref, cwd)
            if path.exists() and path not in found:
                found.append(path)  # a hub model id is no path: it is downloaded inside the job
    return found


def outside(paths: list[Path], directory: Path) -> list[Path]:
    """`paths` that `directory` does not already contain (each needs a mount of its own)."""
    kept: list[Path] = []
    for path in paths:
        if not inside(path, directory) and path not in kept:
            kept.append(path)
    return kept


def absolute(ref: str, cwd: Path) -> Path:
    path = Path(ref).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else cwd / path))


def inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def host_hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface")
