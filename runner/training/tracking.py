"""Experiment trackers (config `tracking`): each metrics row also goes to TensorBoard, W&B or MLflow.

Off by default; metrics.jsonl stays the record. A resumed run continues the same tracker run: the
W&B run id and the MLflow run id are kept in RUN/tracking.json. A tracker that cannot start stops the
run before training (nothing is lost yet and the fix is a setting away); one that fails while logging
is warned about once and dropped, since the training matters more than its dashboard.
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from runner.config import RunConfig
from runner.errors import TrackingError
from runner.rundir import TENSORBOARD_DIR
from runner.rundir import TRACKING_FILE as STATE_FILE
from runner.util import console
from runner.util.files import write_atomic

# Metric columns and the names trackers show them under; step and time are the axes.
NAMES = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm", "tokens_per_s": "train/tokens_per_s",
         "memory_mb": "train/memory_mb", "epoch": "train/epoch", "eval_loss": "eval/loss"}
PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}  # config key -> module to import
DISTRIBUTIONS = {"wandb": ("wandb",), "mlflow": ("mlflow", "mlflow-skinny")}  # config key -> what a lock may pin for it


class Tracker(Protocol):
    name: str

    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self, finished: bool) -> None: ...


def packaged(config: RunConfig) -> list[str]:
    """The trackers the config turns on that need a package (TensorBoard's files lockstep writes itself)."""
    return [key for key in PACKAGES if getattr(config.tracking, key)]


def provided(key: str, pins: Mapping[str, list[str]] | None = None) -> bool:
    """Whether tracker `key`'s package is importable here (pins None), or pinned in a lock's `pins`."""
    if pins is None:
        return importlib.util.find_spec(PACKAGES[key]) is not None
    return any(name in pins for name in DISTRIBUTIONS[key])


def check(config: RunConfig) -> None:
    """Raise TrackingError if a tracker the config asks for cannot be imported in this environment."""
    for key in packaged(config):
        if not provided(key):
            module = PACKAGES[key]
            raise TrackingError(f"tracking.{key} is true, but the {module} package is not installed in this environment (stack "
                                f"{config.stack or 'of this environment'}); add {module} to the stack's lockfiles/<stack>.in and run "
                                f"`nox -s lock -- <stack>`, or set tracking.{key}: false")


class Trackers:
    """The trackers of one attempt; `log` takes metrics rows as MetricsLog writes them."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def log(self, row: dict[str, Any]) -> None:
        values = {NAMES[key]: float(value) for key, value in row.items() if key in NAMES and value is not None}
        for tracker in list(self.trackers):
            try:
                tracker.log(row["step"], values)
            except Exception as exc:  # a dashboard's outage must not stop training
                console.say(f"warning: {tracker.name} failed ({type(exc).__name__}: {exc}); metrics.jsonl keeps every row, "
                            f"{tracker.name} gets no more this attempt")
                self.trackers.remove(tracker)

    def close(self, finished: bool) -> None:
        for tracker in self.trackers:
            try:
                tracker.close(finished)
            except Exception as exc:
                console.say(f"warning: closing {tracker.name} failed: {type(exc).__name__}: {exc}")


def start(config: RunConfig, run_dir: Path, fingerprint: dict[str, Any], resumed_from_step: int | None) -> Trackers:
    """Start the configured trackers for this attempt; TrackingError, before any training, if one cannot start."""
    state = _read_state(run_dir)
    name = config.tracking.run_name or run_dir.resolve().name
    factories = {
        "tensorboard": lambda: TensorBoard(run_dir, resumed_from_step),
        "wandb": lambda: WandB(config, name, state, fingerprint, run_dir),
        "mlflow": lambda: MLflow(config, name, state, fingerprint),
    }
    trackers: list[Tracker] = []
    for key, factory in factories.items():
        if not getattr(config.tracking, key):
            continue
        try:
            trackers.append(factory())
        except Exception as exc:
            Trackers(trackers).close(finished=False)
            raise TrackingError(f"tracking.{key} could not start: {type(exc).__name__}: {exc}\nfix its settings (WANDB_API_KEY, "
                                f"or WANDB_MODE=offline; MLFLOW_TRACKING_URI) or set tracking.{key}: false, then run the same "
                                "command again: nothing was trained") from exc
        _write_state(run_dir, state)  # the run ids, kept as soon as they exist
    return Trackers(trackers)


class TensorBoard:
    name = "tensorboard"

    def __init__(self, run_dir: Path, resumed_from_step: int | None) -> None:
        from runner.training.tensorboard_events import EventWriter

        # Resuming after step k: TensorBoard discards what the interrupted attempt logged after k.
        self.writer = EventWriter(run_dir / TENSORBOARD_DIR, start_step=None if resumed_from_step is None else resumed_from_step + 1)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.writer.scalars(step, values)

    def close(self, finished: bool) -> None:
        self.writer.close()


class WandB:
    name = "wandb"

    def __init__(self, config: RunConfig, name: str, state: dict[str, Any], fingerprint: dict[str, Any], run_dir: Path) -> None:
        import wandb

        run_id = state.setdefault("wandb_run_id", uuid.uuid4().hex[:12])
        self.run = wandb.init(project=config.tracking.project, name=name, id=run_id, resume="allow", dir=str(run_dir),
                              config=config.to_dict() | {"lockstep": _environment(fingerprint)})

    def log(self, step: int, values: dict[str, float]) -> None:
        # W&B ignores steps below its last one: a resumed run's re-done steps (equal to the first time) are not doubled.
        self.run.log(values, step=step)

    def close(self, finished: bool) -> None:
        self.run.finish(exit_code=0 if finished else 1)


class MLflow:
    name = "mlflow"

    def __init__(self, config: RunConfig, name: str, state: dict[str, Any], fingerprint: dict[str, Any]) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_experiment(config.tracking.project)
        if "mlflow_run_id" in state:
            self.run = mlflow.start_run(run_id=state["mlflow_run_id"])
        else:
            self.run = mlflow.start_run(run_name=name)
            state["mlflow_run_id"] = self.run.info.run_id
            # Parameters are written once: MLflow refuses to change one, and a resumed run's are the same.
            mlflow.log_params(_flatten(config.to_dict()))
        mlflow.set_tags({f"lockstep.{key}": str(value) for key, value in _environment(fingerprint).items()})

    def log(self, step: int, values: dict[str, float]) -> None:
        self.mlflow.log_metrics(values, step=step)

    def close(self, finished: bool) -> None:
        self.mlflow.end_run(status="FINISHED" if finished else "KILLED")


def _environment(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """What proves which environment ran, for a tracker's run page."""
    git = fingerprint.get("git") or {}
    return {"stack": fingerprint.get("stack"), "lock_sha256": fingerprint.get("lock_sha256"), "git_commit": git.get("commit"),
            "attempt": fingerprint.get("attempt"), "config_sha256": fingerprint.get("config_sha256")}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    if state:
        write_atomic(run_dir / STATE_FILE, json.dumps(state, indent=2) + "\n")
