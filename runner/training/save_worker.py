"""One checkpoint write at a time, on a thread beside the training loop.

The loop hands over a write (files, hashes, fsyncs, marker, rename, storage hook) and goes on
training; the next save, the end of training and a stop signal wait for it first, so at most one
is in flight. A write that fails is not lost in the thread: the loop gets its error at the next
step boundary (`check`) or when it waits (`wait`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable


class SaveWorker:
    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, name: str, work: Callable[[], None]) -> None:
        """Run `work` on a new thread; any write before it must have been waited for."""
        if self._thread is not None:
            raise RuntimeError("a checkpoint write is still in flight; wait() for it first")

        def run() -> None:
            _yield_cpu_to_training()
            try:
                work()
            except BaseException as exc:  # handed to the loop, which raises it
                self._failure = exc

        # Not a daemon: a process that ends with a write in flight finishes the write first.
        self._thread = threading.Thread(target=run, name=name)
        self._thread.start()

    def wait(self) -> None:
        """Until the write in flight, if any, is done; raise what it raised."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def check(self) -> None:
        """Raise the failure of a write that has ended, without waiting for one still in flight."""
        if self._thread is not None and not self._thread.is_alive():
            self.wait()


def _yield_cpu_to_training() -> None:
    """Lower this thread's priority: on Linux each thread has its own nice value (the threads it starts inherit it),
    so where cores are few the write takes the CPU the training threads leave. Elsewhere the process's is left alone."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass  # not allowed here: the write runs at the loop's priority
