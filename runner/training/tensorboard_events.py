"""TensorBoard event files written without TensorBoard: scalars in the TFRecord + protobuf format it reads.

Written here rather than through tensorboard or torch.utils.tensorboard so that every stack (the MLX
one, the pinned CUDA ones) can write them with nothing more installed. The format is small and stable:
each record is a length, its masked CRC-32C, an `Event` message and the message's masked CRC-32C.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

FILE_VERSION = b"brain.Event:2"
SESSION_START = 1  # SessionLog.START: TensorBoard drops earlier events at or after its step (a resumed run's re-done steps)


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= 0xFFFFFFFFFFFFFFFF  # protobuf encodes negative int64 as ten bytes of two's complement
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire_type)
    if wire_type == 2:  # length-delimited: strings and nested messages
        return key + _varint(len(payload)) + payload
    return key + payload


def _event(step: int, wall_time: float, body: bytes) -> bytes:
    # Event: wall_time = 1 (double), step = 2 (int64), file_version = 3, summary = 5, session_log = 7
    return _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step)) + body


def scalars_event(step: int, values: dict[str, float], wall_time: float) -> bytes:
    # Summary.value = 1 (repeated Value); Value: tag = 1 (string), simple_value = 2 (float)
    summary = b"".join(_field(1, 2, _field(1, 2, tag.encode()) + _field(2, 5, struct.pack("<f", value))) for tag, value in values.items())
    return _event(step, wall_time, _field(5, 2, summary))


def record(event: bytes) -> bytes:
    length = struct.pack("<Q", len(event))
    return length + struct.pack("<I", masked_crc(length)) + event + struct.pack("<I", masked_crc(event))


class EventWriter:
    """One event file per attempt in `directory`, as TensorBoard names them; each event flushed as written."""

    def __init__(self, directory: Path, *, start_step: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = directory / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.lockstep"
        self._file = self.path.open("ab")
        self._write(_event(0, now, _field(3, 2, FILE_VERSION)))
        if start_step is not None:
            # SessionLog { status = 1 }: steps after the checkpoint that the crashed attempt logged are discarded.
            self._write(_event(start_step, now, _field(7, 2, _field(1, 0, _varint(SESSION_START)))))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._write(scalars_event(step, values, time.time()))

    def close(self) -> None:
        self._file.close()

    def _write(self, event: bytes) -> None:
        self._file.write(record(event))
        self._file.flush()
