"""Trainer callbacks of the HF engine: metrics rows and the progress bar with loss and ETA."""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback

from runner.training.metrics import MetricsLog, peak_memory_mb
from runner.util import console


class TokenCounter:
    """Counts the non-padding tokens the trainer has consumed, in total and since the last `take`.

    Each micro-batch's count stays a tensor where the batch is (summed there) until it is read, at a logged step
    or a checkpoint: turning it into a number at every step would make the CPU wait for the GPU each time."""

    def __init__(self) -> None:
        self._unread: Any = 0
        self._pending = 0
        self._total = 0

    def add(self, count: Any) -> None:
        self._unread = self._unread + count

    def _read(self) -> None:
        count, self._unread = int(self._unread), 0
        self._pending += count
        self._total += count

    @property
    def total(self) -> int:
        self._read()
        return self._total

    def take(self) -> int:
        self._read()
        count, self._pending = self._pending, 0
        return count


class MetricsCallback(TrainerCallback):
    """Turns the trainer's log events into metrics.jsonl rows."""

    def __init__(self, log: MetricsLog, tokens: TokenCounter) -> None:
        self.log = log
        self.tokens = tokens
        self.last_time = time.perf_counter()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last_time = time.perf_counter()
        self.tokens.take()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return  # one writer for metrics.jsonl
        logs = logs or {}
        common = {"step": state.global_step, "epoch": _round(state.epoch), "memory_mb": round(peak_memory_mb(), 1)}
        if "loss" in logs:
            now = time.perf_counter()
            elapsed, self.last_time = now - self.last_time, now
            tokens = self.tokens.take()
            self.log.append(
                **common,
                loss=float(logs["loss"]),
                lr=logs.get("learning_rate"),
                grad_norm=_float(logs.get("grad_norm")),
                tokens_per_s=round(tokens / elapsed, 1) if elapsed > 0 else None,
            )
        if "eval_loss" in logs:
            self.log.append(**common, eval_loss=float(logs["eval_loss"]))
            # Evaluation time is not training time: restart the throughput clock.
            self.last_time = time.perf_counter()


class ProgressCallback(TrainerCallback):
    """One bar over optimizer steps, showing the latest train and eval loss; tqdm gives the ETA."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.bar = console.progress_bar(total=state.max_steps, initial=state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.bar is None or not logs:
            return
        if "loss" in logs:
            self.postfix["loss"] = f"{float(logs['loss']):.3f}"
        if "eval_loss" in logs:
            self.postfix["eval_loss"] = f"{float(logs['eval_loss']):.3f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
