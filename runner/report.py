"""Run outputs people read: metrics.csv, summary.json and plots/*.png, all derived from metrics.jsonl."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from runner import metrics

SUMMARY_FILE = "summary.json"
PLOTS = ("loss", "lr", "memory")


def write(run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Write every derived output; return the summary."""
    rows = metrics.read(run_dir)
    write_csv(run_dir, rows)
    summary = summarize(rows) | extra
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    write_plots(run_dir, rows)
    return summary


def write_progress(run_dir: Path) -> None:
    """Outputs of an unfinished run: the curves so far, but no summary (a summary means finished)."""
    rows = metrics.read(run_dir)
    write_csv(run_dir, rows)
    write_plots(run_dir, rows)


def load_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished run, or None if the run has not finished."""
    path = run_dir / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def require_finished(run_dir: Path) -> dict[str, Any]:
    """The summary of a finished run; OutputDirError if `run_dir` holds none (its adapter would be missing)."""
    from runner.errors import OutputDirError

    summary = load_summary(run_dir)
    if summary is None:
        raise OutputDirError(f"{run_dir} holds no finished run (no {SUMMARY_FILE}): the adapter is written when training ends; "
                             f"finish it with `lockstep train {run_dir / 'config.yaml'}`")
    return summary


def write_csv(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    with (run_dir / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=metrics.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    train = [r for r in rows if r["loss"] is not None]
    evals = [r for r in rows if r["eval_loss"] is not None]
    first_eval = evals[0]["eval_loss"] if evals else None
    final_eval = evals[-1]["eval_loss"] if evals else None
    return {
        "final_train_loss": train[-1]["loss"] if train else None,
        "first_eval_loss": first_eval,
        "final_eval_loss": final_eval,
        # Share by which eval loss fell from the first evaluation to the last.
        "eval_loss_drop": round(1 - final_eval / first_eval, 4) if first_eval and final_eval is not None else None,
        "peak_memory_mb": max((r["memory_mb"] for r in rows if r["memory_mb"] is not None), default=None),
    }


def write_plots(run_dir: Path, rows: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    written = []
    for name, series, ylabel in (
        ("loss", (("loss", "train loss"), ("eval_loss", "eval loss")), "loss"),
        ("lr", (("lr", "learning rate"),), "learning rate"),
        ("memory", (("memory_mb", "peak memory"),), "MiB"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        for column, label in series:
            points = [(r["step"], r[column]) for r in rows if r[column] is not None]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if column == "eval_loss" else None, markersize=3, label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
        ax.set_title(f"{run_dir.name}: {ylabel}")
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
