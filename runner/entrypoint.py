"""The in-job entry point, the same on every backend: run directory, resume, manifest, engine, report.

Starting a run whose directory already holds one continues it: from its newest valid
checkpoint, or from the start if it has none. A finished run is left as it is.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from runner import distributed, drift, engines, environment, manifest, metrics, report, tracking
from runner.checkpoint import Checkpoint, CheckpointStore, StorageHook
from runner.config import RunConfig, changed_keys, resume_safe
from runner.errors import OutputDirError, ResumeRefused, StoppedForRequeue
from runner.signals import StopFlag, stop_on

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"
ATTEMPTS_FILE = "attempts.jsonl"
JOBS_DIR = "jobs"  # runner.backends.jobs keeps submissions there
PREFLIGHT_REPORT = "preflight_report.json"
RECOMMENDED_CONFIG = "recommended_config.yaml"
# Written before a run starts (scheduler submissions, preflight's report): not the run itself.
BEFORE_RUN = frozenset({JOBS_DIR, PREFLIGHT_REPORT, RECOMMENDED_CONFIG})


def main(
    config: RunConfig,
    *,
    backend: str = "local",
    fresh: bool = False,
    strict_env: bool = False,
    after_checkpoint: StorageHook | None = None,
) -> dict[str, Any]:
    """Train `config` into its run directory (resuming it if needed) and return the run's summary.

    In a multi-process run, rank 0 prepares the directory and writes every file in it; the
    other ranks wait for it, then train from the same checkpoint.
    """
    engines.check(config)  # environment problems surface before anything is written
    tracking.check(config)
    env = environment.describe()
    if strict_env:
        environment.require_exact(env)
    elif env["drift"] and not env["drift"]["clean"] and distributed.is_main():
        say(f"warning: this environment differs from the lock of stack {env['stack']}: {drift.describe(env['drift'])}")
    run_dir = Path(config.output_dir)
    main_rank = distributed.is_main()
    store = CheckpointStore(run_dir)
    if main_rank:
        data_hashes = manifest.data_sha256(config)  # hashed once: data files can be large
        _prepare(config, run_dir, fresh, data_hashes)
    distributed.barrier(config.distributed.backend)
    finished = report.load_summary(run_dir)
    if finished is not None:
        if main_rank:
            say(f"run already complete in {run_dir}; nothing to do (--fresh trains it again, keeping the old one)")
        return finished

    meta: dict[str, Any] = {}
    trackers = None
    if main_rank:
        run_dir.mkdir(parents=True, exist_ok=True)
        resume = _find_resume_point(store, run_dir)
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        fingerprint = _record_attempt(config, backend, env, data_hashes, run_dir, resume)
        meta = {key: fingerprint[key] for key in ("config_sha256", "lock_sha256", "data_sha256", "attempt")}
        trackers = tracking.start(config, run_dir, fingerprint, resume.step if resume else None)
    distributed.barrier(config.distributed.backend)
    if not main_rank:
        resume, _ = store.newest_valid()  # rank 0 has removed what was unusable

    context = engines.TrainContext(
        run_dir=run_dir,
        store=store,
        resume_from=resume,
        stop=StopFlag(),
        checkpoint_meta=meta,
        after_checkpoint=after_checkpoint,
        trackers=trackers,
    )
    trained = False
    try:
        with stop_on(config.checkpoint.signals, context.stop):
            result = engines.train(config, context)
        trained = not result.stopped
    finally:
        if trackers is not None:
            trackers.close(finished=trained)
    if result.stopped:
        if main_rank:
            report.write_progress(run_dir)
        raise StoppedForRequeue(
            f"{context.stop.signal_name} received: checkpoint written at step {result.steps} in {run_dir}; "
            "run the same command again (or let the scheduler requeue it) to continue from there"
        )
    if not main_rank:
        return {"steps": result.steps}
    summary = report.write(
        run_dir,
        {
            "engine": result.engine,
            "steps": result.steps,
            "attempts": meta["attempt"],
            "world_size": distributed.world_size(),
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


def _prepare(config: RunConfig, run_dir: Path, fresh: bool, data_hashes: dict[str, str]) -> None:
    """Move the old run aside for --fresh, or check that the existing run may be continued."""
    if fresh and has_run_content(run_dir):
        say(f"--fresh: moved the earlier run to {move_aside(run_dir)}")
    elif has_run_content(run_dir):
        _check_same_run(config, run_dir, data_hashes)


def _check_same_run(config: RunConfig, run_dir: Path, data_hashes: dict[str, str]) -> None:
    """Refuse to continue a run with a config that would train differently; warn on harmless changes."""
    previous_file = run_dir / CONFIG_FILE
    if not previous_file.is_file():
        raise OutputDirError(
            f"output_dir {run_dir} is not empty and holds no lockstep run; choose a new directory, "
            "or pass --fresh to move its contents aside"
        )
    changed = changed_keys(yaml.safe_load(previous_file.read_text()) or {}, config.to_dict())
    blocking = [key for key in changed if not resume_safe(key)] + _changed_data(data_hashes, run_dir)
    if blocking:
        raise ResumeRefused(
            f"the run in {run_dir} was started with a different {', '.join(blocking)}; continuing would not "
            "reproduce it. Restore the original values (see its config.yaml), choose another output_dir, "
            "or pass --fresh to start over (the old run is moved aside, not deleted)"
        )
    if changed:
        say(f"continuing with changed {', '.join(changed)} (these do not alter training)")


def _changed_data(now: dict[str, str], run_dir: Path) -> list[str]:
    """Data files whose contents differ from those the run started with (same path, new data)."""
    try:
        before = json.loads((run_dir / MANIFEST_FILE).read_text()).get("data_sha256") or {}
    except (OSError, ValueError):
        return []  # no fingerprint to compare with; the config comparison still applies
    return [f"data.{split} (file contents)" for split in now if split in before and before[split] != now[split]]


def _find_resume_point(store: CheckpointStore, run_dir: Path) -> Checkpoint | None:
    for leftover in store.remove_abandoned():
        say(f"removed an unfinished checkpoint save: {leftover.name}")
    newest, rejected = store.newest_valid()
    for bad in rejected:
        say(f"checkpoint {bad.path.name} is unusable: {bad.reason}; falling back to an earlier one")
    dropped = metrics.truncate_after(run_dir, newest.step if newest else -1)
    if newest is not None:
        say(f"resuming from {newest.path.name} (step {newest.step})")
    elif dropped:
        say("no usable checkpoint: starting the run over from step 0")
    return newest


def _record_attempt(
    config: RunConfig, backend: str, env: dict[str, Any], data_hashes: dict[str, str], run_dir: Path, resume: Checkpoint | None
) -> dict[str, Any]:
    """manifest.json describes the latest attempt; attempts.jsonl keeps every attempt's."""
    attempts = run_dir / ATTEMPTS_FILE
    number = 1 + (len(attempts.read_text().splitlines()) if attempts.is_file() else 0)
    fingerprint = manifest.collect(config, backend, env, data_hashes) | {"attempt": number, "resumed_from_step": resume.step if resume else None}
    (run_dir / MANIFEST_FILE).write_text(json.dumps(fingerprint, indent=2) + "\n")
    with attempts.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(fingerprint) + "\n")
    return fingerprint


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


def has_run_content(run_dir: Path) -> bool:
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputDirError(f"output_dir {run_dir} exists and is not a directory; choose another output_dir")
    return run_dir.is_dir() and any(entry.name not in BEFORE_RUN for entry in run_dir.iterdir())


def _describe(run_dir: Path, summary: dict[str, Any]) -> str:
    lines = [f"run complete: {run_dir}"]
    for key in ("steps", "attempts", "final_train_loss", "first_eval_loss", "final_eval_loss", "eval_loss_drop", "wall_time_s", "tokens_per_s"):
        if summary.get(key) is not None:
            lines.append(f"  {key:<18} {summary[key]}")
    return "\n".join(lines)


def say(message: str) -> None:
    print(f"lockstep: {message}", file=sys.stderr, flush=True)
