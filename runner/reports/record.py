"""A run directory read for reports (config, manifest, attempts, metrics, plan, summary), and what it says in words."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from runner import rundir
from runner.errors import OutputDirError
from runner.job import outputs
from runner.rundir import ATTEMPTS_FILE, CONFIG_FILE, MANIFEST_FILE
from runner.stacks import drift
from runner.training import metrics
from runner.util import jsonl

# An unfinished run that logged nothing for this long is taken as stopped: slow steps and evaluations take minutes, not hours.
STALLED_AFTER_S = 3600


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    path: Path
    config_text: str | None  # config.yaml as written, None if the directory has none
    manifest: dict[str, Any] | None  # the latest attempt's environment
    attempts: list[dict[str, Any]]
    rows: list[dict[str, Any]]  # metrics.jsonl, never empty
    plan: dict[str, Any] | None  # plan.json; older runs have none
    summary: dict[str, Any] | None  # summary.json, only once finished
    last_logged: float  # Unix time of the last metrics row
    damaged: list[str]  # file:line of the lines of metrics.jsonl and attempts.jsonl that could not be read (skipped)

    @property
    def config(self) -> dict[str, Any]:
        loaded = yaml.safe_load(self.config_text) if self.config_text else None
        return loaded if isinstance(loaded, dict) else {}


def load(run_dir: Path) -> RunRecord:
    """Read `run_dir`; OutputDirError if it is not a run directory or has logged no metrics yet."""
    if not run_dir.is_dir():
        what = "does not exist" if not run_dir.exists() else "is not a directory"
        raise OutputDirError(f"run directory {run_dir} {what}; give the directory a run writes to (its config's output_dir, e.g. runs/demo)")
    metrics_file = run_dir / rundir.METRICS_FILE
    rows = metrics.read(run_dir)
    attempts = jsonl.read(run_dir / ATTEMPTS_FILE)
    if not rows:
        raise OutputDirError(f"{run_dir} has no metrics yet (no rows in {metrics_file}): a run logs them from its first "
                             f"optimizer step on; wait for it, or start it with `lockstep train {run_dir / CONFIG_FILE}`"
                             if (run_dir / CONFIG_FILE).is_file() else
                             f"{run_dir} holds no lockstep run (no {rundir.METRICS_FILE}); give the output_dir of a run")
    config_file = run_dir / CONFIG_FILE
    return RunRecord(
        path=run_dir,
        config_text=config_file.read_text(encoding="utf-8") if config_file.is_file() else None,
        manifest=_json(run_dir / MANIFEST_FILE),
        attempts=attempts.records,
        rows=rows,
        plan=_json(run_dir / rundir.PLAN_FILE),
        summary=_json(run_dir / rundir.SUMMARY_FILE),
        # Rows of older runs carry no time: the file was last changed when the last row was appended.
        last_logged=rows[-1].get("time") or metrics_file.stat().st_mtime,
        # A last metrics line without its newline may still be being written; any other unreadable line is damage.
        damaged=[f"{metrics_file}:{n}" for n in jsonl.read(metrics_file).damaged] + attempts.where(run_dir / ATTEMPTS_FILE),
    )


def status(record: RunRecord, now: float | None = None) -> str:
    """'finished after N steps', or how far an unfinished run got: in progress, or stopped, at step k of N."""
    if record.summary is not None:
        return f"finished after {record.summary.get('steps', record.rows[-1]['step'])} steps"
    total = (record.plan or {}).get("total_steps")
    where = f"step {record.rows[-1]['step']}" + (f" of {total}" if total else "")
    since = f"{utc(record.last_logged)}"
    if (now if now is not None else time.time()) - record.last_logged > STALLED_AFTER_S:
        return f"stopped at {where} (nothing logged since {since}); continue it with `lockstep train {record.path / CONFIG_FILE}`"
    return f"in progress at {where} (last logged {since})"


def summary_values(record: RunRecord) -> dict[str, Any]:
    """summary.json of a finished run (its `last_attempt` figures as `last attempt: KEY`); for an unfinished one,
    the same values computed from the metrics so far."""
    if record.summary is None:
        return outputs.summarize(record.rows)
    flat: dict[str, Any] = {}
    for key, value in record.summary.items():
        if isinstance(value, dict):
            flat |= {f"{key.replace('_', ' ')}: {inner}": item for inner, item in value.items()}
        else:
            flat[key] = value
    return flat


def environment_facts(record: RunRecord) -> dict[str, str]:
    """The latest attempt's environment as label -> text: what to compare when two runs differ."""
    manifest = record.manifest or {}
    engine = (record.summary or {}).get("engine") or record.config.get("engine")
    facts = {
        "engine": f"{engine} (chosen when training starts; recorded when the run finishes)" if engine == "auto" else engine,
        "backend": manifest.get("backend"),
        "host": manifest.get("host"),
        "stack": manifest.get("stack"),
        "lock sha256": (manifest.get("lock_sha256") or "")[:12] or None,
        "drift": _drift(manifest.get("drift")) if "drift" in manifest else None,
        "python": manifest.get("python"),
    }
    facts |= {name: version for name, version in (manifest.get("packages") or {}).items()}
    facts |= {
        "cuda": _cuda(manifest["cuda"]) if "cuda" in manifest else None,
        "git commit": _git(manifest.get("git")) if "git" in manifest else None,
        "image": (manifest.get("image") or {}).get("ref"),
        "lockstep": manifest.get("lockstep_version"),
    }
    return {label: str(value) for label, value in facts.items() if value is not None}


def format_value(key: str, value: Any) -> str:
    """A summary value as a reader wants it: losses to 4 decimals, shares as percentages, units named."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and (key == "eval_loss_drop" or key.endswith("_share")):
        return f"{value:.1%}"
    if isinstance(value, float):
        if key.endswith("time_s"):
            return f"{value:,.1f} s" + (f" ({_clock(value)})" if value >= 60 else "")
        if key.endswith("_mb"):
            return f"{value:,.1f} MiB"
        return f"{value:.4f}" if "loss" in key else f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return value if isinstance(value, str) else json.dumps(value)


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _drift(result: dict[str, Any] | None) -> str:
    if not result:
        return "not checked (the environment has no stack lock)"
    return "clean: matches the lock" if result.get("clean") else drift.describe(result)


def _cuda(cuda: dict[str, Any] | None) -> str:
    if cuda is None:
        return "none (no torch)"
    if cuda.get("available"):
        return f"{cuda.get('torch_cuda')} on " + ", ".join(cuda.get("devices") or ["unknown devices"])
    return f"not available (torch built for CUDA {cuda['torch_cuda']})" if cuda.get("torch_cuda") else "not available (CPU build of torch)"


def _git(git: dict[str, Any] | None) -> str:
    if not git:
        return "unknown (not run from a git checkout)"
    return f"{git.get('commit', '')[:12]} " + ("(with uncommitted changes)" if git.get("dirty") else "(clean)")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise OutputDirError(f"{path} is not valid JSON ({exc}); lockstep writes it whole, so it was changed by hand or "
                             "damaged: restore it from a copy of the run") from exc
    return loaded if isinstance(loaded, dict) else None
