"""The MLX engine's checkpoints, through lockstep's atomic store: the adapter (mlx-lm's format, so a
checkpoint loads on its own), the optimizer's state and the loop's position.

The random state is not saved: each step reseeds it from (seed, step) (see mlx_loop), so the
step number carries it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from runner.engines.mlx_model import ADAPTER_WEIGHTS, write_adapter
from runner.training.checkpoint import MARKER, save_failed
from runner.training.saver import Saver, Write

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
# What a checkpoint holds besides the adapter in mlx-lm's format (which is the run's adapter/ once it ends).
TRAINING_STATE = (OPTIMIZER_FILE, STATE_FILE, MARKER)


class Checkpointer(Saver):
    """The files are written at the step boundary (into the page cache: the adapter of an MLX run is small and
    already in host memory); the worker thread hashes, syncs and seals them while training goes on."""

    def save_now(self, step: int, model: Any, optimizer: Any, settings: dict[str, Any], state: dict[str, Any], base: str) -> None:
        self.save(step, lambda: self._write_files(step, model, optimizer, settings, state, base))

    def _write_files(self, step: int, model: Any, optimizer: Any, settings: dict[str, Any], state: dict[str, Any], base: str) -> Write:
        staging = self.store.start(step)
        try:
            write_adapter(model, settings, staging, base=base)
            mx.save_safetensors(str(staging / OPTIMIZER_FILE), dict(tree_flatten(optimizer.state)))
            (staging / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2) + "\n")
            meta = self.marker_meta(state.get("train_tokens", 0), epoch=state.get("epoch"))
        except Exception as exc:  # a full disk surfaces as OSError, or as MLX's own RuntimeError
            self.store.abandon(step)
            raise save_failed(step, exc, self.store) from exc
        return lambda: self.store.commit(step, meta)


def restore(path: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    """Load a checkpoint's adapter and optimizer state into `model` and `optimizer`; return its loop state."""
    model.load_weights(list(mx.load(str(path / ADAPTER_WEIGHTS)).items()), strict=False)
    optimizer.state = tree_unflatten(list(mx.load(str(path / OPTIMIZER_FILE)).items()))
    mx.eval(model.parameters(), optimizer.state)
    return json.loads((path / STATE_FILE).read_text())
