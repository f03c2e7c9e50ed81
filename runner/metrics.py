"""Per-step metrics of a run: appended to metrics.jsonl as they happen, so a crash keeps them."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

COLUMNS = ("step", "epoch", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s", "memory_mb")
METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends one JSON object per logging event; missing values are null."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS_FILE

    def append(self, **values: Any) -> dict[str, Any]:
        unknown = set(values) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown metric(s): {sorted(unknown)}")
        row = {column: values.get(column) for column in COLUMNS}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
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
