"""The MLX engine's checkpoints, through lockstep's atomic store: the adapter (mlx-lm's format, so a
checkpoint loads on its own), the optimizer's state and the loop's position.

The random state is not saved: each step reseeds it from (seed, step) (see mlx_loop), so the
step number carries it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from runner.engines.mlx_model import ADAPTER_WEIGHTS, write_adapter
from runner.training.checkpoint import MARKER, Checkpoint, Saver, save_failed

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
# What a checkpoint holds besides the adapter in mlx-lm's format (which is the run's adapter/ once it ends).
TRAINING_STATE = (OPTIMIZER_FILE, STATE_FILE, MARKER)


class Checkpointer(Saver):
    def save(self, step: int, model: Any, optimizer: Any, settings: dict[str, Any], state: dict[str, Any], base: str) -> None:
        started = time.perf_counter()
        try:
            checkpoint = self._write(step, model, optimizer, settings, state, base)
        finally:
            self.seconds += time.perf_counter() - started
        self.saved_one(step, checkpoint)

    def _write(self, step: int, model: Any, optimizer: Any, settings: dict[str, Any], state: dict[str, Any], base: str) -> Checkpoint:
        staging = self.store.start(step)
        try:
            write_adapter(model, settings, staging, base=base)
            mx.save_safetensors(str(staging / OPTIMIZER_FILE), dict(tree_flatten(optimizer.state)))
            (staging / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2) + "\n")
            return self.store.commit(step, self.marker_meta(state.get("train_tokens", 0), epoch=state.get("epoch")))
        except Exception as exc:  # a full disk surfaces as OSError, or as MLX's own RuntimeError
            self.store.abandon(step)
            raise save_failed(step, exc, self.store) from exc


def restore(path: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    """Load a checkpoint's adapter and optimizer state into `model` and `optimizer`; return its loop state."""
    model.load_weights(list(mx.load(str(path / ADAPTER_WEIGHTS)).items()), strict=False)
    optimizer.state = tree_unflatten(list(mx.load(str(path / OPTIMIZER_FILE)).items()))
    mx.eval(model.parameters(), optimizer.state)
    return json.loads((path / STATE_FILE).read_text())
