"""The in-job entry point, the same on every backend: run directory, resume, manifest, engine, report.

Starting a run whose directory already holds one continues it: from its newest valid
checkpoint, or from the start if it has none. A finished run is left as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

import yaml

from runner import engines, run_lock, rundir
from runner.config import RunConfig, changed_keys, resume_safe
from runner.errors import OutputDirError, ResumeRefused, StoppedForRequeue
from runner.job import manifest, outputs
from runner.rundir import (
    ADAPTER_DIR,
    ATTEMPTS_FILE,
    CONFIG_FILE,
    MANIFEST_FILE,
    check_usable,
    has_run_content,
    move_aside,
)
from runner.stacks import drift, environment
from runner.training import distributed, final_outputs, metrics, tracking
from runner.training.checkpoint import Checkpoint, CheckpointStore, read_marker, write_failed
from runner.training.saver import StorageHook
from runner.training.signals import StopFlag, stop_on
from runner.util import console, jsonl, shell
from runner.util.files import write_atomic

T = TypeVar("T")


def main(
    config: RunConfig,
    *,
    backend: str = "local",
    fresh: bool = False,
    strict_env: bool = False,
    after_checkpoint: StorageHook | None = None,
) -> dict[str, Any]:
    """Train `config` into its run directory (resuming it if needed) and return the run's summary.

    In a multi-process run, rank 0 holds the run directory's lock, prepares the directory and writes
    every file in it; the other ranks wait for it, then train from the same checkpoint.
    """
    engines.check(config)  # environment problems surface before anything is written
    tracking.check(config)
    env = environment.describe()
    if strict_env:
        environment.require_exact(env)
    elif env["drift"] and not env["drift"]["clean"] and distributed.is_main():
        console.say(f"warning: this environment differs from the lock of stack {env['stack']}: {drift.describe(env['drift'])}")
    run_dir = Path(config.output_dir)
    with run_lock.hold(run_dir) if distributed.is_main() else nullcontext():
        return _train(config, run_dir, backend, fresh, env, after_checkpoint)


def _train(config: RunConfig, run_dir: Path, backend: str, fresh: bool, env: dict[str, Any],
           after_checkpoint: StorageHook | None) -> dict[str, Any]:
    main_rank = distributed.is_main()
    store = CheckpointStore(run_dir)
    resume: Checkpoint | None = None
    if main_rank:
        data_hashes = manifest.data_sha256(config)  # hashed once: data files can be large
        resume = _prepare(config, run_dir, store, fresh, data_hashes)
    distributed.barrier(config.distributed.backend)
    finished = rundir.load_summary(run_dir)
    if finished is not None:
        if main_rank:
            console.say(f"run already complete in {run_dir}; nothing to do (--fresh trains it again, keeping the old one)")
        return finished

    meta: dict[str, Any] = {}
    trackers = None
    if main_rank:
        write_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
        fingerprint = _record_attempt(config, backend, env, data_hashes, run_dir, resume)
        meta = {key: fingerprint[key] for key in ("config_sha256", "lock_sha256", "data_sha256", "attempt")}
        meta["config"] = config.to_dict()  # what a resume is checked against: a checkpoint's marker cannot tear
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
            _write_outputs(lambda: outputs.write_progress(run_dir), run_dir, store)
        raise StoppedForRequeue(
            f"{context.stop.signal_name} received: checkpoint written at step {result.steps} in {run_dir}; "
            "run the same command again (or let the scheduler requeue it) to continue from there"
        )
    if not main_rank:
        return {"steps": result.steps}
    facts = {
        "engine": result.engine,
        "steps": result.steps,
        "attempts": meta["attempt"],
        "world_size": distributed.world_size(),
        "train_rows": result.train_rows,
        "valid_rows": result.valid_rows,
        **result.totals.summary(),  # the whole run, over every attempt
        **result.details,
        "last_attempt": {**result.attempt.summary(), "resumed_from_step": resume.step if resume else None},
    }
    summary = _write_outputs(lambda: outputs.write(run_dir, facts), run_dir, store)
    console.say(_describe(run_dir, summary))
    return summary


def _prepare(config: RunConfig, run_dir: Path, store: CheckpointStore, fresh: bool, data_hashes: dict[str, str]) -> Checkpoint | None:
    """Make `run_dir` ready for this attempt and return the checkpoint to resume from.

    A run that would train differently is refused before anything in it changes; only then are a
    crash's leftovers removed and the metrics logged after the checkpoint dropped.
    """
    if fresh and has_run_content(run_dir):
        console.say(f"--fresh: moved the earlier run to {move_aside(run_dir)}")
        run_lock.relock(run_dir)
    check_usable(run_dir)
    newest, rejected = store.newest_valid()
    if has_run_content(run_dir):
        _check_same_run(config, run_dir, data_hashes, newest)
    if rundir.load_summary(run_dir) is not None:
        return newest  # finished: nothing to clean up or continue
    run_dir.mkdir(parents=True, exist_ok=True)
    removed, stuck = store.remove_abandoned()
    for leftover in removed:
        console.say(f"removed an unfinished checkpoint save: {leftover.name}")
    for leftover in final_outputs.remove_leftovers(run_dir):
        console.say(f"removed an unfinished write of the run's outputs: {leftover.name}")
    for path in stuck:
        console.say(f"warning: cannot remove {path} (left by an interrupted save); delete it by hand")
    for bad in rejected:
        console.say(f"checkpoint {bad.path.name} is unusable: {bad.reason}; falling back to an earlier one")
    dropped, damaged = metrics.truncate_after(run_dir, newest.step if newest else -1)
    for where in damaged:
        console.say(f"warning: {where} is not a metrics row (damaged or cut short); it was skipped and dropped")
    for pruned in store.retain(config.checkpoint.keep_last):  # a crash between a save and its retention left one too many
        console.say(f"removed {pruned.name}: beyond checkpoint.keep_last={config.checkpoint.keep_last}")
    if newest is not None:
        console.say(f"resuming from {newest.path.name} (step {newest.step})")
    elif dropped:
        console.say("no usable checkpoint: starting the run over from step 0")
    return newest


def _check_same_run(config: RunConfig, run_dir: Path, data_hashes: dict[str, str], newest: Checkpoint | None) -> None:
    """Refuse to continue a run with a config that would train differently; warn on harmless changes. A run
    with no checkpoint yet (it failed before its first save) has nothing to protect: it starts afresh.

    The newest checkpoint's marker says how the run was started (it is written whole, once); a run with no
    checkpoint yet is compared with its config.yaml, and one whose config.yaml cannot be read has nothing
    to continue: it starts from step 0.
    """
    recorded, data_before = _recorded_start(run_dir, newest)
    if recorded is None:
        if newest is not None:
            raise OutputDirError(
                f"the run in {run_dir} has checkpoints but no readable record of the config it was started with "
                f"({CONFIG_FILE} is missing or damaged, and {newest.path.name} predates the record in checkpoints); "
                f"restore {run_dir / CONFIG_FILE} from a copy, or pass --fresh to start over (the old run is moved aside)"
            )
        console.say(f"warning: {run_dir / CONFIG_FILE} is missing or damaged and the run has no checkpoint: starting it from step 0")
        return
    changed = changed_keys(recorded, config.to_dict())
    blocking = [key for key in changed if not resume_safe(key)]
    blocking += [f"data.{split} (file contents)" for split in data_hashes if split in data_before and data_before[split] != data_hashes[split]]
    if blocking and newest is None:  # nothing was saved that the change could make wrong
        console.say(f"the run in {run_dir} has no checkpoint, so nothing to resume: starting it afresh with the changed "
                    f"{', '.join(blocking)}")
        return
    if blocking:
        raise ResumeRefused(
            f"the run in {run_dir} was started with a different {', '.join(blocking)}; continuing would not "
            "reproduce it. Restore the original values (see its config.yaml), choose another output_dir, "
            "or pass --fresh to start over (the old run is moved aside, not deleted)"
        )
    if changed:
        console.say(f"continuing with changed {', '.join(changed)} (these do not alter training)")


def _recorded_start(run_dir: Path, newest: Checkpoint | None) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The config and data hashes the run was started with: from its newest checkpoint, else its files."""
    if newest is not None:
        marker = read_marker(newest.path)
        if isinstance(marker.get("config"), dict):
            return marker["config"], marker.get("data_sha256") or {}
    try:
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        config = None
    try:
        data_before = json.loads((run_dir / MANIFEST_FILE).read_text()).get("data_sha256") or {}
    except (OSError, ValueError, AttributeError):
        data_before = {}  # no fingerprint to compare with; the config comparison still applies
    return (config if isinstance(config, dict) else None), data_before


def _record_attempt(
    config: RunConfig, backend: str, env: dict[str, Any], data_hashes: dict[str, str], run_dir: Path, resume: Checkpoint | None
) -> dict[str, Any]:
    """manifest.json describes the latest attempt; attempts.jsonl keeps every attempt's."""
    attempts = run_dir / ATTEMPTS_FILE
    number = 1 + jsonl.count_lines(attempts)
    fingerprint = manifest.collect(config, backend, env, data_hashes) | {"attempt": number, "resumed_from_step": resume.step if resume else None}
    write_atomic(run_dir / MANIFEST_FILE, json.dumps(fingerprint, indent=2) + "\n")
    jsonl.append(attempts, fingerprint)
    return fingerprint


def _write_outputs(write: Callable[[], T], run_dir: Path, store: CheckpointStore) -> T:
    """Run `write` (the summary, metrics.csv and plots); a full disk or an I/O error there is exit 6, like a failed save."""
    try:
        return write()
    except OSError as exc:
        raise write_failed("the run's summary and plots", run_dir, exc, store,
                           then="write them from the last checkpoint (no training is repeated)") from exc


def _describe(run_dir: Path, summary: dict[str, Any]) -> str:
    """The run in a few lines a person reads: what it did, where its adapter is, what to run next
    (summary.json keeps every number at full precision)."""
    where = shell.quote(str(run_dir))
    attempts = summary.get("attempts") or 1
    effort = [f"{summary['steps']} steps in {attempts} attempt{'s' * (attempts > 1)}"]
    if summary.get("wall_time_s") is not None:
        effort.append(_duration(summary["wall_time_s"]))
    if summary.get("tokens_per_s"):
        effort.append(f"{summary['tokens_per_s']:,.0f} tokens/s")
    losses = [f"train loss {summary['final_train_loss']:.3f}"] if summary.get("final_train_loss") is not None else []
    if summary.get("first_eval_loss") is not None and summary.get("final_eval_loss") is not None:
        drop = f" ({summary['eval_loss_drop']:.0%} lower)" if summary.get("eval_loss_drop") else ""
        losses.append(f"eval loss {summary['first_eval_loss']:.3f} -> {summary['final_eval_loss']:.3f}{drop}")
    lines = [f"run complete: {run_dir}", "  " + ", ".join(effort)] + (["  " + "; ".join(losses)] if losses else [])
    lines += [f"  adapter: {run_dir / ADAPTER_DIR}",
              f"  next: lockstep generate {where} --prompt 'your question'   (answers with the adapter)",
              f"        lockstep report {where}   (an HTML report: losses, checkpoints, environment)"]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{rest:02d}s" if minutes else f"{rest}s")

