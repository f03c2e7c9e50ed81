"""What the benchmarks share: interleaved rounds, medians and ratios, and real `lockstep train` runs timed from outside.

Ratios are taken within one session: the compared variants run in alternating order
(A B, B A, A B, ...) and each side's median is used, so slow drift of a shared machine
(other processes, thermal state) falls on both sides alike.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.helpers import REPO_ROOT

T = TypeVar("T")
EXIT_REQUEUE = 75  # "checkpointed, requeue me" (runner.errors.StoppedForRequeue)


# The real model (configs/smollm2-chat.yaml's) on the demo's data, whose prompt/completion rows the bare trl script
# reads too: 30 steps of batch 4, as overrides of the demo config; evaluated at the end only (an evaluation of the
# 64 validation rows takes as long as ~15 steps here, and would make the comparison one of evaluations).
SMOLLM2 = ("model.name_or_path=builtin:smollm2-135m-instruct", "train.per_device_batch_size=4", "train.max_steps=30",
           "train.learning_rate=1e-3", "train.eval_every_percent=100")


def rounds(default: int = 3, variable: str = "LOCKSTEP_BENCH_ROUNDS") -> int:
    """How many rounds a comparison runs: the environment `variable`, else `default` (at least 1)."""
    return max(1, int(os.environ.get(variable, default)))


def interleaved(variants: Mapping[str, Callable[[int], T]], count: int) -> dict[str, list[T]]:
    """Run every variant `count` times, alternating their order each round; results by variant, in round order."""
    results: dict[str, list[T]] = {name: [] for name in variants}
    names = list(variants)
    for index in range(count):
        for name in names if index % 2 == 0 else reversed(names):
            results[name].append(variants[name](index))
    return results


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float, digits: int = 3) -> float | None:
    return round(numerator / denominator, digits) if denominator else None


def spread(values: list[float]) -> float | None:
    """(max - min) / median: how much the rounds of one variant disagree."""
    middle = median(values)
    return round((max(values) - min(values)) / middle, 3) if middle else None


@dataclass
class Run:
    """One `lockstep train` process, timed from the moment it was started."""

    run_dir: Path
    started: float  # Unix time just before the process was started
    returncode: int
    stderr: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "summary.json").read_text())

    def first_step_after(self, step: int) -> dict[str, Any]:
        """The first training-step row (one with a loss) logged after `step`."""
        return next(row for row in self.rows if row["loss"] is not None and row["step"] > step)

    def seconds_to_first_step(self, after: int = 0) -> float:
        """From process start to the first training-step row after `after` (rows carry their Unix `time`)."""
        return round(self.first_step_after(after)["time"] - self.started, 3)


def lockstep_train(config: Path, run_dir: Path, *sets: str, stop_after_step: int | None = None, timeout: float = 900,
                   env: Mapping[str, str] | None = None) -> Run:
    """`lockstep train CONFIG --set output_dir=RUN_DIR --set ...` in this environment's Python.

    With `stop_after_step`, SIGTERM is sent once that step is logged (the run checkpoints and exits 75).
    """
    argv = [sys.executable, "-m", "runner", "train", str(config), "--set", f"output_dir={run_dir}"]
    for item in sets:
        argv += ["--set", item]
    log = run_dir.with_name(run_dir.name + f".{time.time_ns()}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env or {}))
    with log.open("wb") as stderr:
        started = time.time()
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            if stop_after_step is not None:
                _wait_for_step(run_dir, stop_after_step, process, timeout)
                process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return Run(run_dir, started, code, log.read_text(errors="replace"), read_rows(run_dir))


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    from runner.training import metrics

    return metrics.read(run_dir)


def _wait_for_step(run_dir: Path, step: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"lockstep exited with {process.returncode} before step {step}")
        rows = read_rows(run_dir) if (run_dir / "metrics.jsonl").exists() else []
        if any(row["loss"] is not None and row["step"] >= step for row in rows):
            return
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached within {timeout} s")


class OtherProcesses:
    """How much CPU other processes took while a benchmark ran: all busy CPU time of the machine
    (/proc/stat) minus this process's and its waited-for children's (os.times), as a share of
    the machine's capacity over that time; and the share stolen by the hypervisor, on a VM."""

    def __init__(self) -> None:
        self.start = self._snapshot()

    def shares(self) -> dict[str, float] | None:
        end = self._snapshot()
        if self.start is None or end is None:
            return None  # no /proc/stat (not Linux)
        (busy0, steal0, ours0, wall0), (busy1, steal1, ours1, wall1) = self.start, end
        capacity = (wall1 - wall0) * (os.cpu_count() or 1)
        if capacity <= 0:
            return None
        return {"others_cpu_share": round(max(0.0, (busy1 - busy0) - (ours1 - ours0)) / capacity, 3),
                "steal_share": round((steal1 - steal0) / capacity, 3)}

    @staticmethod
    def _snapshot() -> tuple[float, float, float, float] | None:
        try:
            fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        times = os.times()
        ours = times.user + times.system + times.children_user + times.children_system
        return (user + nice + system + irq + softirq) / tick, steal / tick, ours, time.monotonic()
