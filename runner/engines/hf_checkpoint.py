"""Checkpointing inside the HF trainer: when to save (policy, stop signal) and how (atomically).

The files inside a checkpoint are the trainer's own (adapter, optimizer.pt, scheduler.pt,
rng_state*.pth, trainer_state.json), written by its own writers, so `Trainer.train(resume_from_checkpoint=...)` restores
the optimizer, scheduler, RNG states and data position; lockstep adds the atomic write,
the completion marker, retention and the storage hook around them. The final checkpoint's
adapter files are the run's adapter/: the outputs of a finished run come from it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME

from runner.training.checkpoint import MARKER, Checkpoint, save_failed
from runner.training.distributed import any_rank
from runner.training.saver import Saver, Write
from runner.training.signals import StopFlag

# What a checkpoint holds besides the adapter as PEFT saves it: the trainer's state and lockstep's marker.
TRAINING_STATE = ("optimizer*", "scheduler*", "scaler*", "rng_state*", TRAINER_STATE_NAME, MARKER)


class SaveTrigger(TrainerCallback):
    """At each step boundary: stops the run if a background write failed, and asks the trainer to save when the
    policy or a stop signal says so."""

    def __init__(self, checkpointer: Checkpointer, stop: StopFlag) -> None:
        self.checkpointer = checkpointer
        self.stop = stop

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.checkpointer.check()
        # Every rank must reach the same decision, or the save's barriers would deadlock.
        stop, due = any_rank(self.stop.requested, self.checkpointer.policy.due(state.global_step), device=args.device)
        if stop:
            if not self.stop.requested:
                self.stop.request("a stop signal on another rank")
            control.should_save = True
            control.should_training_stop = True
        elif due:
            control.should_save = True
        return control


class Checkpointer(Saver):
    """Saves through the store; called by the trainer on every rank.

    At the step boundary the adapter's and the optimizer's tensors are copied to host memory, the small
    state (scheduler, scaler, RNG) is written and the trainer's state captured; the worker thread then
    writes the adapter and optimizer files with the trainer's own writers (the same files as the trainer's
    own save) and the trainer state, and seals the checkpoint. Where the trainer's save is itself collective (FSDP, DeepSpeed), the files are
    written at the step boundary and only the sealing is left to the worker.
    """

    def save_now(self, trainer: Any) -> None:
        step = trainer.state.global_step
        _render_model_card_once(trainer.accelerator.unwrap_model(trainer.model))
        self.save(step, lambda: self._take_state(trainer, step))

    def _take_state(self, trainer: Any, step: int) -> Write | None:
        main = trainer.args.should_save  # rank 0 writes the shared files; every rank takes part
        staging = self.store.staging_dir(step)
        try:
            if main:
                self.store.start(step)
            trainer.accelerator.wait_for_everyone()
            trainer.store_flos()
            if _collective_save(trainer):
                trainer.save_model(str(staging), _internal_call=True)
                trainer._save_optimizer_and_scheduler(str(staging))
                tensors = None
            elif main:
                tensors = _host_copy({"model": _trainable_state(trainer), "optimizer": trainer.optimizer.state_dict()})
                torch.save(trainer.lr_scheduler.state_dict(), staging / SCHEDULER_NAME)
            if hasattr(trainer, "_save_scaler"):  # transformers >= 4.48 keeps the grad scaler apart
                trainer._save_scaler(str(staging))
            trainer._save_rng_state(str(staging))  # one file per rank in multi-process runs
            state = _trainer_state(trainer.state) if main else None
            trainer.accelerator.wait_for_everyone()
            tokens = trainer.token_counter.total if trainer.token_counter else 0
            meta = self.marker_meta(tokens, epoch=trainer.state.epoch)
        except Exception as exc:  # a full disk surfaces as OSError, or as torch's/safetensors' own errors
            if main:
                self.store.abandon(step)
            raise save_failed(step, exc, self.store) from exc
        if not main:
            return None

        def write() -> Checkpoint:
            if tensors is not None:
                trainer._save(str(staging), state_dict=tensors["model"])  # adapter (PEFT's format), tokenizer, arguments
                torch.save(tensors["optimizer"], staging / OPTIMIZER_NAME)
            # What TrainerState.save_to_json writes, without its indentation: json's indenting encoder is pure Python,
            # and the logged rows grow with every step (TrainerState.load_from_json reads either).
            (staging / TRAINER_STATE_NAME).write_text(json.dumps(state, sort_keys=True) + "\n", encoding="utf-8")
            return self.store.commit(step, meta)

        return write


def _trainer_state(state: Any) -> dict[str, Any]:
    """The trainer's state as it is at this step boundary; the list of logged rows is the only part the next steps change."""
    fields = {field.name: getattr(state, field.name) for field in dataclasses.fields(state)}
    return {**fields, "log_history": list(state.log_history)}


class _SameModelCard:
    """PEFT renders the same model card (README.md) into every checkpoint of a run, and rendering it is most of the
    CPU time of a small adapter's save (tens of ms): rendered once, the same bytes are written after that."""

    def __init__(self, render: Any) -> None:
        self.render = render
        self.text: bytes | None = None

    def __call__(self, output_dir: str) -> None:
        card = Path(output_dir) / "README.md"
        if self.text is None:
            self.render(output_dir)
            self.text = card.read_bytes() if card.is_file() else b""
        elif self.text:
            card.write_bytes(self.text)


def _render_model_card_once(model: Any) -> None:
    render = getattr(model, "create_or_update_model_card", None)
    if render is not None and not isinstance(render, _SameModelCard):
        model.create_or_update_model_card = _SameModelCard(render)


def _collective_save(trainer: Any) -> bool:
    """Whether the trainer's save gathers state over the processes (so every rank must take part, at the boundary)."""
    return any(getattr(trainer, flag, False) for flag in ("is_fsdp_enabled", "is_deepspeed_enabled", "is_distributed_loading_by_transformers"))


def _trainable_state(trainer: Any) -> dict[str, torch.Tensor]:
    """The trained entries of the model's state dict (the LoRA weights), under the names PEFT's save expects."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    return {name: tensor for name, tensor in model.state_dict().items() if name in trained}


def _host_copy(tree: Any) -> Any:
    """`tree` with every tensor copied to host memory: what the next steps change in place is kept as it is now."""
    copies = _copy_tensors(tree)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # the device-to-host copies were queued without waiting
    return copies


def _copy_tensors(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True, non_blocking=value.is_cuda)
    if isinstance(value, dict):
        return {key: _copy_tensors(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copy_tensors(item) for item in value)
    return value
