"""A SIF's system partition as a charliecloud image directory, for `ch-run` on a cluster.

ch-run mounts its image read-only and cannot create a bind destination inside it ("can't
mkdir: Read-only file system"), so every host path a job binds at the same path must already
exist in the image. A squashfs cannot grow one; a directory can. So the partition is unpacked
once, next to the SIF, into a directory named by the partition's sha256 (a rebuilt SIF gets
a new one), and each submission adds the mount points it needs before the job is queued.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from runner.errors import ImageError
from runner.stacks import sif, sif_file
from runner.util import console


def partition_sha256(image: Path) -> str:
    """The sha256 of the SIF's system partition: the sidecar `nox -s sif` wrote, else read from the SIF."""
    sidecar = image.with_name(image.name + sif.DIGEST_SUFFIX)
    if sidecar.is_file() and sidecar.stat().st_mtime >= image.stat().st_mtime:
        return sidecar.read_text().strip()
    parsed = sif_file.read(image)
    return parsed.sha256(parsed.primary_system())


def image_directory(image: Path) -> Path:
    """Where the SIF's partition is (or will be) unpacked for ch-run."""
    return image.with_name(f"{image.name.removesuffix('.sif')}.{partition_sha256(image)[:12]}.ch")


def unpack(image: Path) -> Path:
    """The SIF's partition unpacked into image_directory(image), once; whole or not at all."""
    target = image_directory(image)
    if target.is_dir():
        return target
    console.say(f"unpacking {image.name}'s system partition for ch-run into {target} (once per SIF)")
    with tempfile.TemporaryDirectory(prefix=".lockstep-unpack-", dir=image.parent) as scratch:
        parsed = sif_file.read(image)
        squashfs = Path(scratch) / "partition.squashfs"
        parsed.extract(parsed.primary_system(), squashfs)
        partial = Path(scratch) / "image"
        result = subprocess.run(["unsquashfs", "-d", str(partial), "-no-xattrs", "-quiet", "-no-progress", str(squashfs)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ImageError(f"could not unpack {image} for ch-run: {result.stderr.strip()[-2000:]}")
        try:
            os.replace(partial, target)
        except OSError:
            if not target.is_dir():  # not another submission that unpacked the same partition meanwhile
                raise
    return target


def add_mount_points(directory: Path, host_paths: Iterable[Path]) -> None:
    """An empty directory (or, for a file, an empty file) in the image for each host path bound at the same path."""
    for host_path in host_paths:
        inside = directory / host_path.relative_to("/")
        for parent in [*reversed(inside.relative_to(directory).parents), inside.relative_to(directory)]:
            if (directory / parent).is_symlink():
                raise ImageError(f"cannot bind {host_path} into {directory}: /{parent} is a symbolic link in the image; "
                                 "bind it at another path (slurm.binds: SRC:DEST)")
        if host_path.is_dir():
            inside.mkdir(parents=True, exist_ok=True)
        else:
            inside.parent.mkdir(parents=True, exist_ok=True)
            inside.touch(exist_ok=True)
