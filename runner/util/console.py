"""What lockstep tells the person running it: one line on stderr, `lockstep: ...`, flushed at once (a log
shows it in order with the output of the processes lockstep starts)."""

from __future__ import annotations

import sys


def say(message: str, *, after_bar: bool = False) -> None:
    """`after_bar`: on a line of its own below a progress bar that has not ended its line."""
    print(f"{chr(10) if after_bar else ''}lockstep: {message}", file=sys.stderr, flush=True)
