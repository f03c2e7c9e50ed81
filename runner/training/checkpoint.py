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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runner.errors import CheckpointError
from runner.rundir import CHECKPOINTS_DIR
from runner.util import console
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
    checkpoint_time_s: float = 0.0

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.train_tokens + other.train_tokens, self.train_time_s + other.train_time_s,
                      self.checkpoints_saved + other.checkpoints_saved, self.checkpoint_time_s + other.checkpoint_time_s)

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
        files = {}
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            files[path.relative_to(staging).as_posix()] = {"sha256": file_sha256(path), "size": path.stat().st_size}
            fsync_file(path)
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


class Policy:
    """When to save: every N% of the run's optimizer steps, every M minutes, and at the last step."""

    def __init__(
        self, *, every_percent: float, every_minutes: float | None, total_steps: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = max(1, round(total_steps * every_percent / 100))
        self.total_steps = total_steps
        self.every_s = every_minutes * 60 if every_minutes else None
        self.clock = clock
        self.last_save = clock()

    def due(self, step: int) -> bool:
        if step >= self.total_steps or step % self.interval == 0:
            return True
        return self.every_s is not None and self.clock() - self.last_save >= self.every_s

    def saved(self) -> None:
        self.last_save = self.clock()


StorageHook = Callable[[Path], None]


class Saver:
    """What every engine's checkpointer shares: the store, the policy, retention, the storage hook,
    the newest checkpoint written, and this attempt's figures (recorded in each marker beside those it
    carries from the checkpoint it resumed from)."""

    def __init__(
        self, store: CheckpointStore, policy: Policy, *, keep_last: int, meta: dict[str, Any], after_checkpoint: StorageHook | None,
        carried: Totals | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.keep_last = keep_last
        self.meta = meta
        self.after_checkpoint = after_checkpoint
        self.carried = carried or Totals()
        self.saved = 0
        self.seconds = 0.0
        self.started = time.perf_counter()
        self.last_step: int | None = None  # the step of the newest checkpoint this attempt saved (every rank)
        self.last: Checkpoint | None = None  # that checkpoint (rank 0, which writes it)

    def begin(self) -> None:
        """The training loop starts: this attempt's training time counts from here."""
        self.started = time.perf_counter()

    def attempt(self, tokens: int) -> Totals:
        """This attempt's figures so far, `tokens` being the tokens it trained on."""
        return Totals(tokens, time.perf_counter() - self.started, self.saved, self.seconds)

    def marker_meta(self, tokens: int, **extra: Any) -> dict[str, Any]:
        """What the marker of the checkpoint being written records besides its files: the run's hashes and
        config, and the run's figures up to it (this checkpoint counted, its own write time not yet known)."""
        totals = self.carried + self.attempt(tokens) + Totals(checkpoints_saved=1)
        return {**self.meta, **extra, "totals": asdict(totals)}

    def saved_one(self, step: int, checkpoint: Checkpoint | None) -> None:
        """After the save of `step`: `checkpoint` is None on the ranks that did not write it."""
        self.policy.saved()
        self.saved += 1
        self.last_step = step
        if checkpoint is None:
            return
        self.last = checkpoint
        self.store.retain(self.keep_last)
        console.say(f"checkpoint saved: {checkpoint.path}")
        if self.after_checkpoint is not None:
            call_storage_hook(self.after_checkpoint, checkpoint.path)


def call_storage_hook(hook: StorageHook, path: Path, attempts: int = 3, delay_s: float = 2.0) -> None:
    """Run the after-checkpoint hook (e.g. a volume commit), retrying with backoff; never swallow a failure."""
    for attempt in range(1, attempts + 1):
        try:
            hook(path)
            return
        except Exception as exc:  # any failure of user/back-end code counts; it is re-raised below
            last = exc
            console.say(f"storage hook failed after {path.name} (attempt {attempt}/{attempts}): {exc!r}")
            if attempt < attempts:
                time.sleep(delay_s * 2 ** (attempt - 1))
    raise CheckpointError(
        f"the storage hook failed {attempts} times after saving {path}: {last!r}. The checkpoint is complete on "
        "local disk but may not have reached persistent storage; fix the storage, then run the same command to resume."
    )


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


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
