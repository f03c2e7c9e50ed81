"""Per-step metrics of a run: appended to metrics.jsonl as they happen, so a crash keeps them."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.tracking import Trackers

# `time` (Unix seconds, set when the row is written) lets a reader derive step rate and ETA from the file alone.
COLUMNS = ("step", "epoch", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s", "memory_mb", "time")
METRICS_FILE = "metrics.jsonl"
PLAN_FILE = "plan.json"  # what the run will do, known once the data is read: {"total_steps": N}


class MetricsLog:
    """Appends one JSON object per logging event; missing values are null."""

    def __init__(self, run_dir: Path, *, total_steps: int | None = None, trackers: Trackers | None = None) -> None:
        self.path = run_dir / METRICS_FILE
        self.trackers = trackers
        if total_steps is not None:
            write_plan(run_dir, total_steps)

    def append(self, **values: Any) -> dict[str, Any]:
        unknown = set(values) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown metric(s): {sorted(unknown)}")
        row = {column: values.get(column) for column in COLUMNS}
        row["time"] = round(time.time(), 2)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.trackers is not None:
            self.trackers.log(row)
        return row


def read(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete row; a last line torn by a crash mid-write is ignored."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        if line.strip():
            rows.append(json.loads(line))
    return rows


def write_plan(run_dir: Path, total_steps: int) -> None:
    temporary = run_dir / f".{PLAN_FILE}.{os.getpid()}.tmp"  # every rank writes the same plan: one temporary file each
    temporary.write_text(json.dumps({"total_steps": total_steps}) + "\n")
    os.replace(temporary, run_dir / PLAN_FILE)  # a reader never sees half a file


def read_plan(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / PLAN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def truncate_after(run_dir: Path, step: int) -> int:
    """Drop the rows logged after `step` (work lost with a crash) so a resumed run logs them once; return how many."""
    rows = read(run_dir)
    kept = [row for row in rows if row["step"] <= step]
    path = run_dir / METRICS_FILE
    if not path.exists():
        return 0
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(json.dumps(row) + "\n" for row in kept))
    os.replace(temporary, path)
    return len(rows) - len(kept)


def peak_memory_mb() -> float:
    """Peak accelerator memory if training on CUDA, else the process's peak resident memory."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
