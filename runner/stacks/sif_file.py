"""Reading a SIF (the Singularity Image Format of Apptainer): its header, its descriptors, and the
bytes of one data object, such as the squashfs system partition a container runs from.

The layout is sylabs/sif v2's (`pkg/sif/sif.go`), little-endian and packed: a 128-byte global
header (launch script, "SIF_MAGIC", version, architecture, id, times, where the descriptors and
the data lie), then fixed-size descriptors of 585 bytes. `siftool` (the reference implementation)
writes the SIFs lockstep builds; this reader needs nothing installed, so a cluster's login node
can find and extract the partition with Python alone.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"SIF_MAGIC\0"
HEADER = struct.Struct("<32s10s3s3s16s8q")
DESCRIPTOR = struct.Struct("<i?III7q128s384s")
PARTITION_EXTRA = struct.Struct("<ii3s")
DATA_TYPES = {0x4001: "deffile", 0x4002: "envvar", 0x4003: "labels", 0x4004: "partition", 0x4005: "signature",
              0x4006: "generic-json", 0x4007: "generic", 0x4008: "crypto-message", 0x4009: "sbom"}
FS_SQUASH, PART_PRIMSYS = 1, 2
ARCHES = {"01": "386", "02": "amd64", "03": "arm", "04": "arm64"}


class SifFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Descriptor:
    id: int
    data_type: str
    offset: int
    size: int
    fs_type: int | None = None  # partitions only
    part_type: int | None = None
    arch: str | None = None

    @property
    def is_primary_system(self) -> bool:
        return self.data_type == "partition" and self.part_type == PART_PRIMSYS


@dataclass(frozen=True)
class Sif:
    path: Path
    id: str
    arch: str
    created_at: int  # seconds since the epoch
    descriptors: tuple[Descriptor, ...]

    def primary_system(self) -> Descriptor:
        found = [d for d in self.descriptors if d.is_primary_system]
        if len(found) != 1:
            raise SifFormatError(f"{self.path}: {len(found)} primary system partitions, not one")
        return found[0]

    def read(self, descriptor: Descriptor) -> bytes:
        with self.path.open("rb") as handle:
            handle.seek(descriptor.offset)
            return handle.read(descriptor.size)

    def sha256(self, descriptor: Descriptor) -> str:
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            handle.seek(descriptor.offset)
            left = descriptor.size
            while left:
                chunk = handle.read(min(left, 1 << 20))
                if not chunk:
                    raise SifFormatError(f"{self.path}: object {descriptor.id} is cut short")
                digest.update(chunk)
                left -= len(chunk)
        return digest.hexdigest()

    def extract(self, descriptor: Descriptor, dest: Path) -> None:
        """Copy one object's bytes to `dest` (e.g. the partition, for runtimes that take a squashfs file)."""
        with self.path.open("rb") as source, dest.open("wb") as target:
            source.seek(descriptor.offset)
            left = descriptor.size
            while left:
                chunk = source.read(min(left, 1 << 20))
                target.write(chunk)
                left -= len(chunk)


def read(path: Path) -> Sif:
    with path.open("rb") as handle:
        head = handle.read(HEADER.size)
        if len(head) < HEADER.size:
            raise SifFormatError(f"{path} is not a SIF: {len(head)} bytes")
        _, magic, _version, arch, raw_id, created, _modified, _free, total, desc_offset, _desc_size, *_ = HEADER.unpack(head)
        if magic != MAGIC:
            raise SifFormatError(f"{path} is not a SIF (no SIF_MAGIC in its header)")
        handle.seek(desc_offset)
        table = handle.read(total * DESCRIPTOR.size)
    descriptors = []
    for index in range(total):
        data_type, used, object_id, _group, _link, offset, size, *_rest, _name, extra = DESCRIPTOR.unpack_from(table, index * DESCRIPTOR.size)
        if not used:
            continue
        kind = DATA_TYPES.get(data_type, hex(data_type))
        if kind == "partition":
            fs_type, part_type, part_arch = PARTITION_EXTRA.unpack_from(extra)
            descriptors.append(Descriptor(object_id, kind, offset, size, fs_type, part_type, _arch(part_arch)))
        else:
            descriptors.append(Descriptor(object_id, kind, offset, size))
    return Sif(path, str(uuid.UUID(bytes=raw_id)), _arch(arch), created, tuple(descriptors))


def _arch(raw: bytes) -> str:
    code = raw.rstrip(b"\0").decode(errors="replace")
    return ARCHES.get(code, code)
