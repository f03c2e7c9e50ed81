"""Reads the history rows a W&B run wrote offline (RUN/wandb/offline-run-*/run-<id>.wandb), as the tests check them.

The file is W&B's record log (LevelDB's log format: 32 KiB blocks of records with a 7-byte header,
after a 7-byte ":W&B" file header); each record is a `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32768
RECORD_HEADER = 7  # crc32 (4), length (2), kind (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    found, pending, position = [], b"", 7
    while position + RECORD_HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < RECORD_HEADER:
            position += left  # a block's tail too short for a header is padding
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position:position + RECORD_HEADER])
        if kind == 0:
            position += left
            continue
        chunk = data[position + RECORD_HEADER:position + RECORD_HEADER + length]
        position += RECORD_HEADER + length
        if kind == FULL:
            found.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            found.append(pending + chunk)
    return found


def history(path: Path) -> list[dict[str, Any]]:
    """Every history row of the run file, keyed as logged (plus W&B's _step, _runtime, _timestamp)."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for data in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows


def run_id(path: Path) -> str:
    from wandb.proto import wandb_internal_pb2

    for data in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "run":
            return record.run.run_id
    raise AssertionError(f"{path} holds no run record")
