"""The in-job entry point, the same on every backend: run directory, manifest, engine, report."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from runner import engines, manifest, report
from runner.config import RunConfig
from runner.errors import OutputDirError

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"


def main(config: RunConfig, *, backend: str = "local", fresh: bool = False) -> dict[str, Any]:
    """Train `config` into its run directory and return the run's summary."""
    engines.check(config)  # environment problems surface before anything is written
    run_dir = Path(config.output_dir)
    previous = report.load_summary(run_dir)
    if previous is not None and not fresh:
        say(f"run already complete in {run_dir}; nothing to do (--fresh trains it again, keeping the old one)")
        return previous
    if _has_content(run_dir):
        moved = move_aside(run_dir)
        say(f"moved the earlier run out of the way to {moved}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (run_dir / MANIFEST_FILE).write_text(json.dumps(manifest.collect(config, backend), indent=2) + "\n")
    result = engines.train(config, run_dir)
    summary = report.write(
        run_dir,
        {
            "engine": result.engine,
            "steps": result.steps,
            "train_rows": result.train_rows,
            "valid_rows": result.valid_rows,
            "train_tokens": result.train_tokens,
            "wall_time_s": round(result.wall_time_s, 3),
            "tokens_per_s": round(result.train_tokens / result.wall_time_s, 1) if result.wall_time_s else None,
            **result.details,
        },
    )
    say(_describe(run_dir, summary))
    return summary


def move_aside(run_dir: Path) -> Path:
    """Rename a run directory to a timestamped sibling; runs are never deleted."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = run_dir.with_name(f"{run_dir.name}.previous-{stamp}")
    suffix = 1
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}.previous-{stamp}-{suffix}")
        suffix += 1
    try:
        run_dir.rename(target)
    except OSError as exc:
        raise OutputDirError(f"cannot move {run_dir} aside to {target}: {exc.strerror}; move or rename it yourself") from exc
    return target


def _has_content(run_dir: Path) -> bool:
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputDirError(f"output_dir {run_dir} exists and is not a directory; choose another output_dir")
    return run_dir.is_dir() and any(run_dir.iterdir())


def _describe(run_dir: Path, summary: dict[str, Any]) -> str:
    lines = [f"run complete: {run_dir}"]
    for key in ("steps", "final_train_loss", "first_eval_loss", "final_eval_loss", "eval_loss_drop", "wall_time_s", "tokens_per_s"):
        if summary.get(key) is not None:
            lines.append(f"  {key:<18} {summary[key]}")
    return "\n".join(lines)


def say(message: str) -> None:
    print(f"lockstep: {message}", file=sys.stderr, flush=True)
