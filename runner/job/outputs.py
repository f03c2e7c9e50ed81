"""Run outputs people read: metrics.csv, summary.json and plots/*.png, all derived from metrics.jsonl."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runner.rundir import METRICS_CSV, PLOTS_DIR, SUMMARY_FILE
from runner.training import metrics
from runner.util.files import write_atomic

# Each plot: its curves as (metrics column, what the curve is), and the y axis label.
PLOT_SERIES: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "loss": ((("loss", "train loss"), ("eval_loss", "eval loss")), "loss"),
    "lr": ((("lr", "learning rate"),), "learning rate"),
    "throughput": ((("tokens_per_s", "tokens/s"),), "tokens/s"),
    "memory": ((("memory_mb", "peak memory"),), "peak memory (MiB)"),
}
PLOTS = tuple(PLOT_SERIES)


def write(run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Write every derived output, the summary last (its presence means finished); return the summary."""
    rows = metrics.read(run_dir)
    write_csv(run_dir, rows)
    write_plots(run_dir, rows)
    summary = summarize(rows) | extra
    write_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def write_progress(run_dir: Path) -> None:
    """Outputs of an unfinished run: the curves so far, but no summary (a summary means finished)."""
    rows = metrics.read(run_dir)
    write_csv(run_dir, rows)
    write_plots(run_dir, rows)


def write_csv(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=metrics.COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(run_dir / METRICS_CSV, text.getvalue())


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
    """plots/<name>.png for every name in PLOTS; each replaced whole, since `lockstep report` may redraw them while training does."""
    out = run_dir / PLOTS_DIR
    out.mkdir(exist_ok=True)
    written = []
    for name in PLOTS:
        path = out / f"{name}.png"
        write_atomic(path, render_plot(name, [(run_dir.resolve().name, rows)]))
        written.append(path)
    return written


def render_plot(name: str, runs: Sequence[tuple[str, list[dict[str, Any]]]]) -> bytes:
    """The PNG of plot `name` for (label, metrics rows) runs: one run's curves are named by what they are;
    several runs get a colour each, their eval loss dashed."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    series, ylabel = PLOT_SERIES[name]
    single = len(runs) == 1
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for index, (label, rows) in enumerate(runs):
        for column, what in series:
            points = [(r["step"], r[column]) for r in rows if r.get(column) is not None]
            if not points:
                continue
            steps, values = zip(*points)
            style: dict[str, Any] = {"marker": "o" if column == "eval_loss" else None, "markersize": 3}
            if single:
                style["label"] = what
            else:
                style |= {"color": f"C{index % 10}", "linestyle": "--" if column == "eval_loss" else "-",
                          "label": f"{label}: {what}" if len(series) > 1 else label}
            ax.plot(steps, values, **style)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if (len(series) > 1 or not single) and ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax.set_title(f"{runs[0][0]}: {ylabel}" if single else ylabel)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
