"""`python -m tests.kill_points POINT STEP OUTPUT_DIR [SET ...]`: the demo's training through the in-job entry point
(runner.job.run.main, with a storage hook, as the Modal backend runs it), held at one moment of the background
write of the first checkpoint at or after step STEP, so that a test can SIGKILL it exactly there:

- `before-marker`: every file of the checkpoint written, its completion marker not yet;
- `before-rename`: the marker written and synced, the directory not yet renamed into place;
- `in-hook`: the checkpoint in place, the storage hook (a volume commit) running.

Once there, it writes OUTPUT_DIR.at-POINT and waits; the training loop goes on meanwhile, as it would,
until the next save waits for this write. SET items are `--set` overrides (`key=value`).
"""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

from runner import config
from runner.job import run as job_run
from runner.training import checkpoint
from tests.helpers import DEMO_CONFIG

POINTS = ("before-marker", "before-rename", "in-hook")


def main(argv: list[str]) -> int:
    point, from_step, output_dir, *sets = argv
    if point not in POINTS:
        raise SystemExit(f"POINT must be one of {', '.join(POINTS)}")
    output = Path(output_dir)
    held = threading.Event()

    def hold_if_due(path: Path) -> None:
        match = re.search(r"step-(\d{8})", str(path))
        if match and int(match.group(1)) >= int(from_step) and not held.is_set():
            held.set()
            output.with_name(output.name + f".at-{point}").write_text(match.group(1))
            threading.Event().wait()  # until killed

    real_marker_write, real_swap_in = checkpoint._write_synced, checkpoint.swap_in

    def marker_write(path: Path, text: str) -> None:
        if point == "before-marker":
            hold_if_due(path.parent)
        real_marker_write(path, text)

    def swap_in(staging: Path, final: Path, trash: Path) -> None:
        if point == "before-rename":
            hold_if_due(staging)
        real_swap_in(staging, final, trash)

    def storage_hook(path: Path) -> None:
        if point == "in-hook":
            hold_if_due(path)

    checkpoint._write_synced, checkpoint.swap_in = marker_write, swap_in
    job_run.main(config.load(DEMO_CONFIG, (f"output_dir={output}", *sets)), after_checkpoint=storage_hook)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
