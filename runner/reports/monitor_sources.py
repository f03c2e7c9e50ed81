"""Where `lockstep monitor` reads a run from: its directory in place (local, docker, and Slurm runs on a
shared filesystem), or a local mirror of the small files of a run that lives in a Modal volume.

Both give the monitor the same things: a directory holding the run's small files, the checkpoint
listing, and when the run last wrote its progress outputs (metrics.csv, written when it stops or ends).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from runner.backends import modal_plan
from runner.backends.base import JobHandle
from runner.backends.modal_backend import PLAN_FILE as MODAL_PLAN_FILE
from runner.errors import BackendError
from runner.rundir import (
    ATTEMPTS_FILE,
    CHECKPOINTS_DIR,
    MANIFEST_FILE,
    METRICS_CSV,
    METRICS_FILE,
    PLAN_FILE,
    SUMMARY_FILE,
)
from runner.training import checkpoint
from runner.util.files import write_atomic

MIRROR_DIR = "monitor"  # RUN/jobs/<submission>/monitor/: a Modal run's small files as last read from its volume
LISTING_FILE = "listing.json"  # in the mirror: the volume's listing of the run (file times, checkpoints)
# What the monitor copies from a volume: everything it shows, and none of the large files (checkpoints, adapter).
SMALL_FILES = (METRICS_FILE, PLAN_FILE, ATTEMPTS_FILE, SUMMARY_FILE, MANIFEST_FILE)
PROGRESS_FILE = METRICS_CSV  # written when a run stops or finishes, never while it trains


@dataclass(frozen=True)
class CheckpointEntry:
    """One checkpoint directory, judged without hashing anything (cheap enough for every refresh)."""

    step: int
    complete: bool  # its completion marker is there: the marker is written last (resume still verifies every sha256)
    written_at: float  # Unix time: the marker's if complete, else the directory's
    staging: bool = False  # a save in progress (or one a crash abandoned)


def list_checkpoints(run_dir: Path) -> list[CheckpointEntry]:
    """The checkpoint and staging directories of a run directory on this machine, oldest step first."""
    root = run_dir / CHECKPOINTS_DIR
    try:
        names = os.listdir(root)
    except OSError:
        return []
    found = []
    for name in names:
        parsed = _parse_name(name)
        if parsed is None:
            continue
        step, staging = parsed
        path = root / name
        marker = path / checkpoint.MARKER
        try:
            complete = not staging and marker.is_file()
            written_at = (marker if complete else path).stat().st_mtime
        except OSError:
            continue  # removed or moved into place while listed (retention, a save's final rename)
        found.append(CheckpointEntry(step, complete, written_at, staging))
    return sorted(found, key=lambda entry: (entry.step, entry.staging))


def _parse_name(name: str) -> tuple[int, bool] | None:
    """(step, staging) of a checkpoint directory's name, or None for anything else (trash, stray files)."""
    staging = name.startswith(checkpoint.STAGING_PREFIX)
    match = checkpoint.NAME.match(name[len(checkpoint.STAGING_PREFIX):] if staging else name)
    return (int(match.group(1)), staging) if match else None


class DirectorySource:
    """A run directory read in place."""

    def __init__(self, run_dir: Path) -> None:
        self.data_dir = run_dir
        self.where = str(run_dir)

    def refresh(self) -> str | None:
        return None  # nothing to fetch: the files are read where they are written

    def checkpoints(self) -> list[CheckpointEntry]:
        return list_checkpoints(self.data_dir)

    def progress_written_at(self) -> float | None:
        try:
            return (self.data_dir / PROGRESS_FILE).stat().st_mtime
        except OSError:
            return None


@dataclass(frozen=True)
class VolumeEntry:
    path: str  # relative to the directory that was listed
    is_dir: bool
    mtime: float
    size: int


class Volume(Protocol):
    """What the mirror needs of a volume: paths are relative to the volume's root."""

    def listdir(self, path: str, recursive: bool = False) -> list[VolumeEntry]: ...  # [] if `path` does not exist
    def read(self, path: str) -> bytes: ...


class ModalVolume:
    """A Modal volume through the modal SDK's Volume object (listdir, read_file)."""

    def __init__(self, volume: Any) -> None:
        self.volume = volume

    def listdir(self, path: str, recursive: bool = False) -> list[VolumeEntry]:
        from modal.exception import NotFoundError

        try:
            entries = self.volume.listdir(path, recursive=recursive)
        except NotFoundError:
            return []  # the run has not written its directory yet
        prefix = path.strip("/") + "/"
        listed = []
        for entry in entries:
            relative = entry.path.lstrip("/")  # Modal names entries from the volume's root
            is_dir = entry.type.name == "DIRECTORY"  # by name: where the SDK keeps the enum has moved between versions
            listed.append(VolumeEntry(relative.removeprefix(prefix), is_dir, float(entry.mtime), entry.size))
        return listed

    def read(self, path: str) -> bytes:
        return b"".join(self.volume.read_file(path))


def open_modal_volume(name: str) -> Volume:
    import modal  # only when a Modal run is monitored

    return ModalVolume(modal.Volume.from_name(name))


# The one way the monitor opens a volume by name; the tests put a local-directory reader here,
# since Modal's servers cannot be reached from them.
open_volume = open_modal_volume


def modal_location(handle: JobHandle) -> tuple[str, str]:
    """(volume name, the run directory's path in the volume) of a Modal submission."""
    plan_file = handle.job_dir / MODAL_PLAN_FILE
    if plan_file.is_file():
        plan = json.loads(plan_file.read_text())
        (volume,) = plan["function"]["volumes"].values()
        return volume, str(PurePosixPath(plan["call"]["run_dir"]).relative_to(modal_plan.VOLUME_MOUNT))
    fetch = handle.details.get("fetch_results") or []
    if len(fetch) >= 5:  # ["modal", "volume", "get", VOLUME, PATH, LOCAL]
        return fetch[3], fetch[4]
    raise BackendError(f"{handle.job_dir} holds neither {MODAL_PLAN_FILE} nor a handle that names the volume, so the monitor cannot "
                       "tell where the run lives in Modal; restore that file from the submission, or fetch the run with "
                       "`modal volume get VOLUME PATH` and monitor the copy")


class ModalMirror:
    """A Modal run's small files, copied from its volume at every refresh into RUN/jobs/<submission>/monitor/.

    The training function's volume is committed in the background every few seconds and after every
    checkpoint, so the mirror trails the run by about that much.
    """

    def __init__(self, handle: JobHandle) -> None:
        self.volume_name, self.remote = modal_location(handle)
        self.data_dir = handle.job_dir / MIRROR_DIR
        self.where = f"modal volume {self.volume_name}:/{self.remote} (copied to {self.data_dir})"
        self._volume: Volume | None = None

    def refresh(self) -> str | None:
        """Copy what changed; None, or why the volume could not be read (the mirror keeps its last copy)."""
        try:
            if self._volume is None:
                self._volume = open_volume(self.volume_name)
            self._copy(self._volume)
        except ImportError:
            return f"cannot read modal volume {self.volume_name}: the modal package is not installed here (pip install modal)"
        except Exception as exc:  # the SDK's errors (no token, no network...) go into the frame; the monitor keeps going
            return (f"could not read modal volume {self.volume_name}: {type(exc).__name__}: {exc}; showing the last copy "
                    "(`modal token new` logs this machine in)")
        return None

    def _copy(self, volume: Volume) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        top = {entry.path: entry for entry in volume.listdir(self.remote)}
        before = _read_listing(self.data_dir).get("files", {})
        for name in SMALL_FILES:
            local, entry = self.data_dir / name, top.get(name)
            if entry is None:
                local.unlink(missing_ok=True)  # not written yet there, so not shown here
            elif not local.is_file() or before.get(name) != [entry.mtime, entry.size]:
                write_atomic(local, volume.read(f"{self.remote}/{name}"))
        listed = volume.listdir(f"{self.remote}/{CHECKPOINTS_DIR}", recursive=True) if CHECKPOINTS_DIR in top else []
        listing = {"files": {name: [entry.mtime, entry.size] for name, entry in top.items() if not entry.is_dir},
                   "checkpoints": [asdict(entry) for entry in checkpoints_from_volume(listed)]}
        # Written last: a copy interrupted above is compared against the older listing, and fetched again.
        write_atomic(self.data_dir / LISTING_FILE, json.dumps(listing).encode())

    def checkpoints(self) -> list[CheckpointEntry]:
        return [CheckpointEntry(**entry) for entry in _read_listing(self.data_dir).get("checkpoints", [])]

    def progress_written_at(self) -> float | None:
        progress = _read_listing(self.data_dir).get("files", {}).get(PROGRESS_FILE)
        return progress[0] if progress else None


def checkpoints_from_volume(entries: Iterable[VolumeEntry]) -> list[CheckpointEntry]:
    """The checkpoint entries of a recursive listing of a volume's checkpoints/ directory."""
    directories: dict[str, float] = {}
    markers: dict[str, float] = {}
    for entry in entries:
        top, _, rest = entry.path.partition("/")
        if entry.is_dir and not rest:
            directories[top] = max(directories.get(top, 0.0), entry.mtime)
        elif rest == checkpoint.MARKER and not entry.is_dir:
            markers[top] = entry.mtime
        elif rest:
            directories[top] = max(directories.get(top, 0.0), entry.mtime)  # a directory's time may be unset: its newest file's
    found = []
    for name in directories.keys() | markers.keys():
        parsed = _parse_name(name)
        if parsed is not None:
            step, staging = parsed
            complete = not staging and name in markers
            found.append(CheckpointEntry(step, complete, markers[name] if complete else directories.get(name, 0.0), staging))
    return sorted(found, key=lambda entry: (entry.step, entry.staging))


def source_for(run_dir: Path, handle: JobHandle | None) -> DirectorySource | ModalMirror:
    """A Modal run is read from its volume; every other run where it is (Slurm's through the shared filesystem)."""
    return ModalMirror(handle) if handle is not None and handle.backend == "modal" else DirectorySource(run_dir)


def _read_listing(mirror: Path) -> dict[str, Any]:
    try:
        return json.loads((mirror / LISTING_FILE).read_text())
    except (OSError, ValueError):
        return {}

