"""A finished run's outputs (the adapter and its exports) written like checkpoints: staged beside their place,
synced, then swapped in. A crash or a full disk while writing them leaves the earlier version or none, never
part of one; the run is not finished until they are in place, so running it again writes them from its final
checkpoint without training again."""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from runner.training.checkpoint import CheckpointStore, write_failed
from runner.util.files import fsync_dir, fsync_file, remove, swap_in

STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
AGAIN = "write them from the final checkpoint (no training is repeated)"


def publish(run_dir: Path, name: str, write: Callable[[Path], None], store: CheckpointStore, *, then: str = AGAIN) -> Path:
    """Put the directory `write(staging)` fills at `run_dir/name`; CheckpointError (exit 6) if it cannot be written."""
    final = run_dir / name
    staging = run_dir / f"{STAGING_PREFIX}{name}"
    try:
        remove(staging)
        staging.mkdir()
        write(staging)
        for path in staging.rglob("*"):
            if path.is_file():
                fsync_file(path)
        fsync_dir(staging)
        swap_in(staging, final, run_dir / f"{TRASH_PREFIX}{name}")
        fsync_dir(run_dir)
    except Exception as exc:  # a full disk surfaces as OSError, or as torch's/safetensors'/MLX's own errors
        remove(staging)
        raise write_failed(f"the run's {name}/", run_dir, exc, store, then=then) from exc
    return final


def copier(source: Path, *, leave_out: Iterable[str]) -> Callable[[Path], None]:
    """A `write` for publish(): the files of `source` (a checkpoint), except those matching `leave_out`."""
    patterns = tuple(leave_out)

    def write(target: Path) -> None:
        for path in sorted(source.iterdir()):
            if path.is_file() and not any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns):
                shutil.copyfile(path, target / path.name)

    return write


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete what an interrupted publish() left in `run_dir`; return what was removed."""
    if not run_dir.is_dir():
        return []
    leftovers = sorted(p for p in run_dir.iterdir() if p.name.startswith((STAGING_PREFIX, TRASH_PREFIX)))
    return [path for path in leftovers if remove(path)]
