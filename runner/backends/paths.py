"""The host paths a job reads and writes, for backends that must make them visible (mounts, binds)."""

from __future__ import annotations

import os
from pathlib import Path

from runner.config import BUILTIN_PREFIX, RunConfig

INPUT_KEYS = (("data", "train"), ("data", "valid"), ("model", "name_or_path"))  # config values that may name local paths


def local_inputs(config: RunConfig, cwd: Path) -> list[tuple[str, str, Path]]:
    """(section, key, path) of each config value naming an existing local file or directory; built-in
    data and hub model ids are no paths (a hub model is downloaded inside the job)."""
    found = []
    for section, key in INPUT_KEYS:
        ref = getattr(getattr(config, section), key)
        if ref and not ref.startswith(BUILTIN_PREFIX) and absolute(ref, cwd).exists():
            found.append((section, key, absolute(ref, cwd)))
    return found


def inputs(config: RunConfig, config_path: Path, cwd: Path) -> list[Path]:
    """Files and directories the job reads: the config, data files and a local model."""
    candidates = [absolute(str(config_path), cwd), *(path for _, _, path in local_inputs(config, cwd))]
    return list(dict.fromkeys(path for path in candidates if path.exists()))


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
