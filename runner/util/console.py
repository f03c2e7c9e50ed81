"""What lockstep tells the person running it: one line on stderr, `lockstep: ...`, flushed at once (a log
shows it in order with the output of the processes lockstep starts), and the one progress bar of a run.

While the bar is drawn, a message is printed above it and the bar redrawn below (tqdm's write), so the
terminal shows one live bar and a line per event, never a stale copy of the bar per message."""

from __future__ import annotations

import sys
from typing import Any

_bars: list[Any] = []  # the bars drawn now; a closed one is disabled


def say(message: str) -> None:
    line = f"lockstep: {message}"
    live = [bar for bar in _bars if not bar.disable]
    if live:
        type(live[-1]).write(line, file=sys.stderr)
        sys.stderr.flush()
    else:
        print(line, file=sys.stderr, flush=True)


def progress_bar(*, total: int | None, initial: int = 0, desc: str = "train", unit: str = "step", in_bytes: bool = False) -> Any:
    """A tqdm bar on stderr with an ETA; close it (or use it as a context manager) when the work ends.
    `in_bytes`: the counts are bytes, shown as kB, MB...."""
    from tqdm.auto import tqdm

    _bars[:] = [bar for bar in _bars if not bar.disable]
    scale = {"unit": "B", "unit_scale": True, "unit_divisor": 1024} if in_bytes else {"unit": unit}
    bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stderr, **scale)
    _bars.append(bar)
    return bar
