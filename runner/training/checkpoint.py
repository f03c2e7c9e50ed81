"""Atomic checkpoints: staged beside their final place, verified by a marker, renamed into place.

A checkpoint is the directory `checkpoints/step-NNNNNNNN` holding a marker file
(`COMPLETE.json`) with the sha256 of every other file. The marker is written last and the
directory renamed into place after it, so a checkpoint without a valid marker never
existed: a crash at any moment leaves either the previous set of checkpoints or the new one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import Any

from runner.errors import CheckpointError
from runner.rundir import CHECKPOINTS_DIR
from runner.util.files import fsync_dir, fsync_file, remove, swap_in
from runner.util.hashing import file_sha256

MARKER = "COMPLETE.json"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
NAME = re.compile(r"^step-(\d{8})$")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


@dataclass(frozen=True)
class Rejected:
    path: Path
    reason: str


@dataclass(frozen=True)
class Totals:
    """A run's training figures up to a checkpoint, summed over the attempts that led to it (each checkpoint
    records them), so a resumed run's summary describes the whole run. Work a crash lost after the newest
    checkpoint is not counted: it is done again, and counted then."""

    train_tokens: int = 0  # non-padding tokens of the training steps
    train_time_s: float = 0.0  # the training loops alone (model loading and start-up excluded)
    checkpoints_saved: int = 0
    checkpoint_time_s: float = 0.0  # the loop's time inside saves (what training waited for)
    checkpoint_write_s: float = 0.0  # writing them, in the background

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(mine + theirs for mine, theirs in zip(astuple(self), astuple(other))))

    @classmethod
    def recorded(cls, checkpoint: Checkpoint | None) -> Totals:
        """What `checkpoint`'s marker records (nothing for a fresh start, or a checkpoint of an older lockstep)."""
        if checkpoint is None:
            return cls()
        recorded = read_marker(checkpoint.path).get("totals") or {}
        return cls(**{key: recorded[key] for key in asdict(cls()) if isinstance(recorded.get(key), int | float)})

    def summary(self) -> dict[str, Any]:
        """The figures as summary.json gives them."""
        return {"train_tokens": self.train_tokens, "wall_time_s": round(self.train_time_s, 3),
                "tokens_per_s": round(self.train_tokens / self.train_time_s, 1) if self.train_time_s else None,
                "checkpoints_saved": self.checkpoints_saved, "checkpoint_time_s": round(self.checkpoint_time_s, 3),
                "checkpoint_write_s": round(self.checkpoint_write_s, 3),
                "checkpoint_share": round(self.checkpoint_time_s / self.train_time_s, 4) if self.train_time_s else None}


class CheckpointStore:
    """The checkpoints of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir / CHECKPOINTS_DIR

    def staging_dir(self, step: int) -> Path:
        # A fixed name, so every rank of a multi-process run writes into the same directory.
        return self.root / f"{STAGING_PREFIX}step-{step:08d}"

    def start(self, step: int) -> Path:
        """An empty staging directory for the checkpoint of `step`."""
        staging = self.staging_dir(step)
        remove(staging)
        staging.mkdir(parents=True)
        return staging

    def commit(self, step: int, meta: dict[str, Any]) -> Checkpoint:
        """Seal the staging directory of `step` with its marker and move it into place."""
        staging = self.staging_dir(step)
        paths = sorted(p for p in staging.rglob("*") if p.is_file())
        # Side by side: the filesystem commits concurrent fsyncs together, so a stop's checkpoint is durable sooner.
        with ThreadPoolExecutor(max_workers=min(8, len(paths) or 1), thread_name_prefix="lockstep-sync") as pool:
            entries = list(pool.map(_hash_and_sync, paths))
        files = {path.relative_to(staging).as_posix(): entry for path, entry in zip(paths, entries)}
        marker = {"step": step, "files": files, **meta}
        _write_synced(staging / MARKER, json.dumps(marker, indent=2, sort_keys=True))
        fsync_dir(staging)
        final = self.root / f"step-{step:08d}"
        # Only an invalid checkpoint of this step can be there already (a resume from an older one
        # reached this step again), so a crash between the two renames loses nothing valid.
        swap_in(staging, final, self.root / f"{TRASH_PREFIX}{final.name}")
        fsync_dir(self.root)
        return Checkpoint(step, final)

    def abandon(self, step: int) -> None:
        remove(self.staging_dir(step))

    def remove_abandoned(self) -> tuple[list[Path], list[Path]]:
        """Delete the staging and trash entries a crash left (directories or files); return (removed, not removable)."""
        if not self.root.is_dir():
            return [], []
        leftovers = sorted(p for p in self.root.iterdir() if p.name.startswith((STAGING_PREFIX, TRASH_PREFIX)))
        removed = [path for path in leftovers if remove(path)]
        return removed, [path for path in leftovers if path not in removed]

    def candidates(self) -> list[Checkpoint]:
        """Every checkpoint directory by name, newest first, valid or not."""
        if not self.root.is_dir():
            return []
        found = [Checkpoint(int(m.group(1)), p) for p in self.root.iterdir() if (m := NAME.match(p.name))]
        return sorted(found, key=lambda c: c.step, reverse=True)

    def newest_valid(self) -> tuple[Checkpoint | None, list[Rejected]]:
        """The newest checkpoint that verifies, and the newer ones that did not (with why)."""
        rejected = []
        for checkpoint in self.candidates():
            problem = verify(checkpoint.path)
            if problem is None:
                return checkpoint, rejected
            rejected.append(Rejected(checkpoint.path, problem))
        return None, rejected

    def retain(self, keep_last: int) -> list[Path]:
        """Delete all but the newest `keep_last` valid checkpoints, and invalid ones older than those.

        Runs after every save, so it checks markers and file sizes only: hashing every kept
        checkpoint each time would cost more than the save. Resume still verifies every sha256.
        """
        kept = 0
        removed = []
        for checkpoint in self.candidates():
            if kept < keep_last and verify(checkpoint.path, hash_contents=False) is None:
                kept += 1
                continue
            if kept == 0:
                continue  # never delete anything newer than the newest valid checkpoint
            if remove(checkpoint.path):
                removed.append(checkpoint.path)
        return removed


def read_marker(path: Path) -> dict[str, Any]:
    return json.loads((path / MARKER).read_text())


def verify(path: Path, *, hash_contents: bool = True) -> str | None:
    """None if the checkpoint at `path` is complete and unaltered, else the reason it is not.

    With hash_contents=False only the marker, the files' presence and their sizes are checked.
    """
    try:
        marker = read_marker(path)
    except FileNotFoundError:
        return "no completion marker (the save never finished)"
    except (OSError, ValueError) as exc:
        return f"unreadable completion marker ({exc})"
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return "the completion marker lists no files"
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected.get("size"):
            return f"{name} has {file.stat().st_size} bytes, expected {expected.get('size')} (truncated or altered)"
        if hash_contents and file_sha256(file) != expected.get("sha256"):
            return f"{name} does not match its sha256 (altered)"
    return None


def save_failed(step: int, exc: Exception, store: CheckpointStore) -> CheckpointError:
    """The error for a failed save, naming the cause, the free space and the newest intact checkpoint."""
    return write_failed(f"the checkpoint of step {step}", store.root, exc, store)


def write_failed(what: str, where: Path, exc: Exception, store: CheckpointStore, *, then: str = "resume") -> CheckpointError:
    """The error for a failed write of `what` in `where` (exit 6): the cause, the free space, the newest intact
    checkpoint, and what running the same command again does (`then`)."""
    if isinstance(exc, OSError) and exc.strerror:
        cause = exc.strerror + (f" ({exc.filename})" if exc.filename else "")
    else:  # torch and safetensors report a full disk as their own errors, with multi-line messages
        cause = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no details'}"
    try:
        free = f" ({shutil.disk_usage(where).free / 2**20:.1f} MiB free there)"
    except OSError:
        free = ""
    newest, _ = store.newest_valid()
    kept = f"the newest intact checkpoint is {newest.path}" if newest else "no earlier checkpoint exists"
    return CheckpointError(
        f"could not write {what} in {where}{free}: {cause}; {kept}. "
        f"Free space or fix the storage, then run the same command again to {then}."
    )


def _hash_and_sync(path: Path) -> dict[str, Any]:
    entry = {"sha256": file_sha256(path), "size": path.stat().st_size}
    fsync_file(path)
    return entry


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
