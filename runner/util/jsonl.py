"""Append-only JSON-lines logs (metrics.jsonl, attempts.jsonl) that survive a torn or damaged line.

A crash mid-append leaves a last line without its newline; a disk error or a hand edit can leave
a line that is not JSON anywhere. Readers skip such lines and say where they are (file:line);
appenders first end a torn last line, so a new record is never glued onto it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Lines:
    records: list[dict[str, Any]] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)  # 1-based numbers of complete lines that are not a JSON object
    complete: int = 0  # lines ending with a newline
    torn: bool = False  # the last line has no newline: cut by a crash, or still being written

    def where(self, path: Path) -> list[str]:
        """The damaged lines, and a torn last one, as `file:line`, for messages."""
        return [f"{path}:{number}" for number in self.damaged] + [f"{path}:{self.complete + 1} (cut short)"] * self.torn


def read(path: Path) -> Lines:
    """Every complete record of `path` (none if it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return Lines()
    records, damaged = [], []
    lines = text.splitlines(keepends=True)
    torn = bool(lines) and not lines[-1].endswith("\n")
    for number, line in enumerate(lines[:-1] if torn else lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            damaged.append(number)
    return Lines(records, damaged, len(lines) - torn, torn)


def append(path: Path, record: dict[str, Any]) -> None:
    """Add one record as one line; a torn last line is ended first (kept, and skipped by readers), never continued."""
    with path.open("a+b") as handle:
        if handle.tell() > 0:
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write((json.dumps(record) + "\n").encode())


def count_lines(path: Path) -> int:
    """How many records were appended, damaged and torn ones included (each attempt wrote one line)."""
    lines = read(path)
    return lines.complete + lines.torn
