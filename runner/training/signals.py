"""Stop signals: handlers only set a flag; the training loop checkpoints at the next step boundary.

SIGUSR1 is left alone unless configured, because NCCL uses it; Slurm's preemption notice is
sent as SIGUSR2 instead (`--signal=B:USR2@grace`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from runner.util import console


class StopFlag:
    """Set by a stop signal; read by the trainer at each step boundary."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.requested_at: float | None = None  # time.monotonic() of the first request

    def seconds_since_request(self) -> float:
        return time.monotonic() - self.requested_at if self.requested_at is not None else 0.0

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, name: str) -> None:
        first = self.signal_name is None
        if first:
            self.signal_name, self.requested_at = name, time.monotonic()
        note = "checkpointing at the end of this step, then exiting" if first else "already stopping; the save in progress is safe"
        console.say(f"{name} received: {note}")


@contextmanager
def stop_on(names: Sequence[str], flag: StopFlag) -> Iterator[StopFlag]:
    """Route `names` to `flag` for the duration of the block, then restore the old handlers, unless a
    stop was requested: that process is on its way out, and a launcher's follow-up signal (torchrun
    terminates the other workers once one exits) must not kill it mid-exit."""

    def handler(signum: int, frame: FrameType | None) -> None:
        flag.request(signal.Signals(signum).name)

    previous = {}
    for name in names:
        number = getattr(signal, name)
        previous[number] = signal.signal(number, handler)
    try:
        yield flag
    finally:
        if not flag.requested:  # once stopping, a second signal (a launcher's follow-up) must not kill the exit
            for number, old in previous.items():
                signal.signal(number, old)
