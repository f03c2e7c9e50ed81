"""Saving a run's checkpoints from its training loop: when (the policy), the two parts of a save (the state
taken at the step boundary, the write behind the loop), retention, the storage hook, and the figures
each checkpoint records. The checkpoints themselves are runner.training.checkpoint's."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from runner.errors import CheckpointError
from runner.training.checkpoint import Checkpoint, CheckpointStore, Totals, save_failed
from runner.training.save_worker import SaveWorker
from runner.training.signals import StopFlag
from runner.util import console, jsonl


class Policy:
    """When to save: every N% of the run's optimizer steps, every M minutes, and at the last step."""

    def __init__(
        self, *, every_percent: float, every_minutes: float | None, total_steps: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = max(1, round(total_steps * every_percent / 100))
        self.total_steps = total_steps
        self.every_s = every_minutes * 60 if every_minutes else None
        self.clock = clock
        self.last_save = clock()

    def due(self, step: int) -> bool:
        if step >= self.total_steps or step % self.interval == 0:
            return True
        return self.every_s is not None and self.clock() - self.last_save >= self.every_s

    def saved(self) -> None:
        self.last_save = self.clock()


StorageHook = Callable[[Path], None]
Write = Callable[[], Checkpoint]  # finishes a checkpoint whose state was taken at a step boundary


class Saver:
    """What every engine's checkpointer shares: the store, the policy, retention, the storage hook, the
    write in flight, the newest checkpoint written, and this attempt's figures (recorded in each marker
    beside those it carries from the checkpoint it resumed from).

    A save has two parts. At the step boundary the engine takes what a resume needs (tensors copied to
    host memory, small state written), every rank taking part; that is all the loop waits for. Rank 0's
    `Write` then seals the checkpoint on a worker thread (files, hashes, fsyncs, marker, rename), and
    retention and the storage hook follow there. A stop signal's save is waited for at once.
    """

    def __init__(
        self, store: CheckpointStore, policy: Policy, *, keep_last: int, meta: dict[str, Any], after_checkpoint: StorageHook | None,
        carried: Totals | None = None, stop: StopFlag | None = None, events: Path | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.keep_last = keep_last
        self.meta = meta
        self.after_checkpoint = after_checkpoint
        self.carried = carried or Totals()
        self.stop = stop
        self.events = events  # RUN/events.jsonl, on rank 0
        self.worker = SaveWorker()
        self.saved = 0
        self.seconds = 0.0  # the loop's time inside saves (taking state, waiting for the write before)
        self.write_seconds = 0.0  # the worker's time writing
        self.started = time.perf_counter()
        self.ended: float | None = None
        self.last_step: int | None = None  # the step of the newest checkpoint this attempt saved (every rank)
        self.last: Checkpoint | None = None  # that checkpoint once written (rank 0, which writes it)

    def begin(self) -> None:
        """The training loop starts: this attempt's training time counts from here."""
        self.started = time.perf_counter()

    def attempt(self, tokens: int) -> Totals:
        """This attempt's figures so far, `tokens` being the tokens it trained on."""
        end = self.ended if self.ended is not None else time.perf_counter()
        return Totals(tokens, end - self.started, self.saved, self.seconds, self.write_seconds)

    def marker_meta(self, tokens: int, **extra: Any) -> dict[str, Any]:
        """What the marker of the checkpoint being written records besides its files: the run's hashes and
        config, and the run's figures up to it (this checkpoint counted, its own save time not yet known)."""
        totals = self.carried + self.attempt(tokens) + Totals(checkpoints_saved=1)
        return {**self.meta, **extra, "totals": asdict(totals)}

    def check(self) -> None:
        """At a step boundary: a write that failed in the background stops the run here (CheckpointError, exit 6)."""
        self.worker.check()

    def save(self, step: int, take_state: Callable[[], Write | None]) -> None:
        """Save `step`: wait for the write before it (at most one in flight; its failure is raised here), let
        `take_state` take what a resume needs and return rank 0's `Write` (None on the other ranks), and start
        that write in the background. A stop signal's save is waited for here: the process exits once it is durable."""
        blocked_since = time.perf_counter()
        try:
            self.worker.wait()
            write = take_state()
        except BaseException:
            self.seconds += time.perf_counter() - blocked_since
            raise
        self.policy.saved()
        self.saved += 1
        self.last_step = step
        blocked = time.perf_counter() - blocked_since
        if write is not None:
            self.worker.start(f"lockstep-save-{step}", lambda: self._finish(step, write, blocked))
        stopping = self.stop is not None and self.stop.requested
        try:
            if stopping:
                self.worker.wait()
        finally:
            self.seconds += time.perf_counter() - blocked_since
        if stopping and write is not None:
            self._stop_durable(step)

    def finish(self) -> None:
        """The training loop is over: its time ends here; wait for the last write and raise its failure."""
        self.ended = time.perf_counter()
        self.worker.wait()

    @contextmanager
    def settled_on_failure(self) -> Iterator[None]:
        """Around the training loop: if it fails, the write in flight still completes (the next start resumes from
        it) before the loop's error goes on; a failure of that write too is only said."""
        try:
            yield
        except BaseException:
            try:
                self.worker.wait()
            except Exception as exc:
                console.say(f"the checkpoint write in flight failed too: {exc}")
            raise

    def _finish(self, step: int, write: Write, blocked_s: float) -> None:
        started = time.perf_counter()
        try:
            checkpoint = write()
        except Exception as exc:  # a full disk surfaces as OSError, or as torch's/safetensors' own errors
            self.store.abandon(step)
            raise save_failed(step, exc, self.store) from exc
        self.last = checkpoint
        self.store.retain(self.keep_last)
        console.say(f"checkpoint saved: {checkpoint.path}")
        if self.after_checkpoint is not None:
            call_storage_hook(self.after_checkpoint, checkpoint.path)
        write_s = time.perf_counter() - started
        self.write_seconds += write_s
        self._event(event="checkpoint", step=step, loop_blocked_s=round(blocked_s, 4), write_s=round(write_s, 4))

    def _stop_durable(self, step: int) -> None:
        assert self.stop is not None
        seconds = self.stop.seconds_since_request()
        console.say(f"checkpoint of step {step} durable {seconds:.2f} s after {self.stop.signal_name}")
        self._event(event="stop", step=step, signal=self.stop.signal_name, signal_to_durable_s=round(seconds, 4))

    def _event(self, **record: Any) -> None:
        if self.events is not None:
            jsonl.append(self.events, {"time": round(time.time(), 3), "attempt": self.meta.get("attempt"), **record})


def call_storage_hook(hook: StorageHook, path: Path, attempts: int = 3, delay_s: float = 2.0) -> None:
    """Run the after-checkpoint hook (e.g. a volume commit), retrying with backoff; never swallow a failure."""
    for attempt in range(1, attempts + 1):
        try:
            hook(path)
            return
        except Exception as exc:  # any failure of user/back-end code counts; it is re-raised below
            last = exc
            console.say(f"storage hook failed after {path.name} (attempt {attempt}/{attempts}): {exc!r}")
            if attempt < attempts:
                time.sleep(delay_s * 2 ** (attempt - 1))
    raise CheckpointError(
        f"the storage hook failed {attempts} times after saving {path}: {last!r}. The checkpoint is complete on "
        "local disk but may not have reached persistent storage; fix the storage, then run the same command to resume."
    )
