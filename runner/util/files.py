"""Writing files so a crash or power loss at any moment leaves the old content or the new, never part of either.

`write_atomic` replaces one file; `swap_in` puts a finished directory in place of another; `build_once`
makes a cached directory exactly once; `remove` deletes what a crash left, file or directory, and says when it cannot.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

# Filesystems that cannot sync a directory say so with one of these; there is nothing more to make durable there.
_NO_DIR_SYNC = (errno.EINVAL, errno.ENOTSUP, errno.EBADF)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `path` through a temporary file beside it, synced before and after the rename.

    The temporary name carries the process id, so two processes writing the same file (every rank
    writes plan.json) never share one; a reader sees the old file or the new one.
    """
    payload = data.encode() if isinstance(data, str) else data
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_dir(path.parent)


def swap_in(staging: Path, final: Path, trash: Path) -> None:
    """Rename `staging` to `final`; an existing `final` is first renamed to `trash`, then deleted."""
    if not final.exists() and not final.is_symlink():
        staging.rename(final)
        return
    remove(trash)
    final.rename(trash)
    staging.rename(final)
    remove(trash)


def build_once(target: Path, build: Callable[[Path], None], *, complete: str) -> Path:
    """`target`, made by `build(staging)` unless it is there already (it is once its file `complete` exists).

    Built in a staging directory beside the target and renamed into place: a concurrent or interrupted
    build never leaves half of one; a failed build leaves nothing.
    """
    if (target / complete).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        _readable_by_all(staging)  # mkdtemp's 0700 (and 0600 files) would keep a shared cache to one user
        try:
            staging.rename(target)
        except OSError:
            if not (target / complete).exists():  # lost a race only if the winner finished
                raise
    finally:
        remove(staging)
    return target


def _readable_by_all(tree: Path) -> None:
    """Give `tree` the permissions files get by default under this process's umask (directories searchable)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in (tree, *tree.rglob("*")):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def remove(path: Path) -> bool:
    """Delete `path` whatever it is (a directory tree, a file, a link); False if something of it is still there.

    A directory whose permissions forbid listing or deleting its entries is made writable first: what
    a crash left behind must not stay forever.
    """
    if not path.exists() and not path.is_symlink():
        return True
    if path.is_dir() and not path.is_symlink():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=_make_writable_and_retry)
        else:
            shutil.rmtree(path, onerror=_make_writable_and_retry)
    else:
        try:
            path.unlink()
        except OSError:
            pass
    return not path.exists() and not path.is_symlink()


def _make_writable_and_retry(function, name, _exc) -> None:  # type: ignore[no-untyped-def]
    try:
        os.chmod(os.path.dirname(name) or ".", stat.S_IRWXU)
        if os.path.isdir(name) and not os.path.islink(name):
            os.chmod(name, stat.S_IRWXU)
            shutil.rmtree(name, ignore_errors=True)
        else:
            function(name)
    except OSError:
        pass  # remove() reports what is left


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_SYNC:
            raise
    finally:
        os.close(fd)
