"""A child process run in the foreground: lockstep waits for it and hands it every stop signal."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Mapping, Sequence

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)


def run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run `argv` to its end and return its exit code (128 + N for a death by signal N).

    The child runs in its own session, so a Ctrl-C in the terminal reaches it once, through
    lockstep, which forwards it and a scheduler's signals (TERM, HUP, USR2): the child then
    checkpoints and exits, instead of being killed mid-step along with its parent."""
    process = subprocess.Popen(list(argv), env=None if env is None else dict(env), start_new_session=True)
    previous = {sig: signal.signal(sig, lambda number, _frame: process.send_signal(number)) for sig in FORWARDED_SIGNALS}
    try:
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code if code >= 0 else 128 - code
