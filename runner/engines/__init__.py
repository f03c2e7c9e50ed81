"""Engine selection. Each engine module exposes `check(config)` and `train(config, run_dir) -> Result`; imported lazily."""

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

# Engines this release implements, by config name.
ENGINES = {"hf": "runner.engines.hf"}


@dataclass(frozen=True, kw_only=True)
class Result:
    engine: str
    steps: int
    train_rows: int
    valid_rows: int
    train_tokens: int  # non-padding tokens consumed by training steps
    wall_time_s: float  # the training loop alone (model loading excluded)
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


def train(config: RunConfig, run_dir: Path) -> Result:
    return _module(config).train(config, run_dir)


def _module(config: RunConfig) -> Any:
    return importlib.import_module(ENGINES[select(config)])


def _unsloth_usable() -> bool:
    if importlib.util.find_spec("unsloth") is None or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _mlx_usable() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64" and importlib.util.find_spec("mlx") is not None
