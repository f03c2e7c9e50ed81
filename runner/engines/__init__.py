"""Engine selection. Each engine module exposes `check(config)` and `train(config, context) -> Result`; imported lazily."""

from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.config import RunConfig
from runner.errors import EngineError
from runner.rundir import EVENTS_FILE
from runner.training import distributed
from runner.training.checkpoint import Checkpoint, CheckpointStore, Totals
from runner.training.saver import StorageHook
from runner.training.signals import StopFlag
from runner.training.tracking import Trackers

# Engines this release implements, by config name.
ENGINES = {"hf": "runner.engines.hf", "mlx": "runner.engines.mlx"}


@dataclass(frozen=True, kw_only=True)
class TrainContext:
    """What the entry point hands an engine besides the config."""

    run_dir: Path
    store: CheckpointStore
    resume_from: Checkpoint | None
    stop: StopFlag
    checkpoint_meta: dict[str, Any]  # recorded in every checkpoint's marker (config and lock hashes)
    after_checkpoint: StorageHook | None = None
    trackers: Trackers | None = None  # experiment trackers fed with every metrics row (rank 0 only)

    def saver_options(self, config: RunConfig, carried: Totals) -> dict[str, Any]:
        """What every engine's checkpointer (runner.training.saver.Saver) takes besides the store and policy."""
        return {"keep_last": config.checkpoint.keep_last, "meta": self.checkpoint_meta, "after_checkpoint": self.after_checkpoint,
                "carried": carried, "stop": self.stop, "events": self.run_dir / EVENTS_FILE if distributed.is_main() else None}


@dataclass(frozen=True, kw_only=True)
class Result:
    engine: str
    steps: int
    train_rows: int
    valid_rows: int
    attempt: Totals  # this attempt's tokens, training loop time (model loading excluded) and saves
    totals: Totals  # the same for the whole run: the attempts before it (recorded in the checkpoint it resumed from) and this one
    stopped: bool  # a stop signal ended the run early, after a checkpoint
    details: dict[str, Any]


def select(config: RunConfig) -> str:
    """The engine name to use: the configured one, or for `auto` the best one available here."""
    if config.engine != "auto":
        if config.engine not in ENGINES:
            raise EngineError(
                f"engine '{config.engine}' is not available in this release of lockstep; "
                f"set engine: hf (or auto). Available: {', '.join(ENGINES)}"
            )
        return config.engine
    for name, available in (("unsloth", _unsloth_usable), ("mlx", _mlx_usable), ("hf", lambda: True)):
        if name in ENGINES and available():
            return name
    raise EngineError("no engine is available")  # unreachable while hf is registered


def check(config: RunConfig) -> None:
    """Raise EngineError if the selected engine cannot run `config` here."""
    _module(config).check(config)


def train(config: RunConfig, context: TrainContext) -> Result:
    return _module(config).train(config, context)


def _module(config: RunConfig) -> Any:
    return importlib.import_module(ENGINES[select(config)])


def _unsloth_usable() -> bool:
    if importlib.util.find_spec("unsloth") is None or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _mlx_usable() -> bool:
    """On Apple silicon, or in an environment that has MLX and no torch (the `mlx` stack elsewhere)."""
    if importlib.util.find_spec("mlx") is None:
        return False
    return (sys.platform == "darwin" and platform.machine() == "arm64") or importlib.util.find_spec("torch") is None
