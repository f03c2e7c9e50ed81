"""Per-step metrics of a run: appended to metrics.jsonl as they happen, so a crash keeps them."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.rundir import METRICS_FILE, PLAN_FILE
from runner.util import jsonl
from runner.util.files import write_atomic

if TYPE_CHECKING:
    from runner.training.tracking import Trackers

# `time` (Unix seconds, set when the row is written) lets a reader derive step rate and ETA from the file alone.
COLUMNS = ("step", "epoch", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s", "memory_mb", "time")


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
        jsonl.append(self.path, row)
        if self.trackers is not None:
            self.trackers.log(row)
        return row


def read(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete row; a last line torn by a crash mid-write, and any damaged line, are skipped."""
    return [row for row in jsonl.read(run_dir / METRICS_FILE).records if isinstance(row.get("step"), int)]


def write_plan(run_dir: Path, total_steps: int) -> None:
    write_atomic(run_dir / PLAN_FILE, json.dumps({"total_steps": total_steps}) + "\n")  # every rank writes the same plan


def read_plan(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / PLAN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def truncate_after(run_dir: Path, step: int) -> tuple[int, list[str]]:
    """Drop the rows logged after `step` (work lost with a crash) so a resumed run logs them once, and the
    lines that are not rows (torn or damaged); return how many rows were dropped and where the damaged lines were."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return 0, []
    lines = jsonl.read(path)
    rows = [row for row in lines.records if isinstance(row.get("step"), int)]
    kept = [row for row in rows if row["step"] <= step]
    damaged = lines.where(path)
    if len(kept) < len(lines.records) or damaged:
        write_atomic(path, "".join(json.dumps(row) + "\n" for row in kept))
    return len(rows) - len(kept), damaged


def peak_memory_mb() -> float:
    """Peak accelerator memory if training on CUDA, else the process's peak resident memory."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
