"""Checkpointing inside the HF trainer: when to save (policy, stop signal) and how (atomically).

The files inside a checkpoint are the trainer's own (adapter, optimizer.pt, scheduler.pt,
rng_state*.pth, trainer_state.json), so `Trainer.train(resume_from_checkpoint=...)` restores
the optimizer, scheduler, RNG states and data position; lockstep adds the atomic write,
the completion marker, retention and the storage hook around them. The final checkpoint's
adapter files are the run's adapter/: the outputs of a finished run come from it.
"""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback

from runner.training.checkpoint import MARKER, Policy, Saver, save_failed
from runner.training.distributed import any_rank
from runner.training.signals import StopFlag

# What a checkpoint holds besides the adapter as PEFT saves it: the trainer's state and lockstep's marker.
TRAINING_STATE = ("optimizer*", "scheduler*", "scaler*", "rng_state*", "trainer_state.json", MARKER)


class SaveTrigger(TrainerCallback):
    """At each step boundary, asks the trainer to save when the policy or a stop signal says so."""

    def __init__(self, policy: Policy, stop: StopFlag) -> None:
        self.policy = policy
        self.stop = stop

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        # Every rank must reach the same decision, or the save's barriers would deadlock.
        stop, due = any_rank(self.stop.requested, self.policy.due(state.global_step), device=args.device)
        if stop:
            if not self.stop.requested:
                self.stop.request("a stop signal on another rank")
            control.should_save = True
            control.should_training_stop = True
        elif due:
            control.should_save = True
        return control


class Checkpointer(Saver):
    """Writes one checkpoint through the store; called by the trainer on every rank."""

    def save(self, trainer: Any) -> None:
        started = time.perf_counter()
        try:
            self._save(trainer)
        finally:
            self.seconds += time.perf_counter() - started

    def _save(self, trainer: Any) -> None:
        step = trainer.state.global_step
        main = trainer.args.should_save  # rank 0 writes the shared files; every rank takes part
        staging = self.store.staging_dir(step)
        try:
            if main:
                self.store.start(step)
            trainer.accelerator.wait_for_everyone()
            trainer.store_flos()
            trainer.save_model(str(staging), _internal_call=True)
            trainer._save_optimizer_and_scheduler(str(staging))
            if hasattr(trainer, "_save_scaler"):  # transformers >= 4.48 keeps the grad scaler apart
                trainer._save_scaler(str(staging))
            trainer._save_rng_state(str(staging))  # one file per rank in multi-process runs
            if main:
                trainer.state.save_to_json(str(staging / "trainer_state.json"))
            trainer.accelerator.wait_for_everyone()
            tokens = trainer.token_counter.total if trainer.token_counter else 0
            checkpoint = self.store.commit(step, self.marker_meta(tokens, epoch=trainer.state.epoch)) if main else None
        except Exception as exc:  # a full disk surfaces as OSError, or as torch's/safetensors' own errors
            if main:
                self.store.abandon(step)
            raise save_failed(step, exc, self.store) from exc
        self.saved_one(step, checkpoint)
