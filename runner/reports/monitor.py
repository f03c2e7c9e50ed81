"""`lockstep monitor RUN`: a live terminal view of a run that any backend is writing, from another terminal.

Three parts kept apart: collect() reads one Snapshot (the run's files, its checkpoint listing, the
scheduler job's state), render() turns a Snapshot into text and reads nothing, watch() redraws.
Everything shown comes from the run directory's files, so the view is the same on every backend.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from runner import rundir
from runner.backends import jobs
from runner.backends.base import JobHandle, JobState
from runner.training import metrics
from runner.util import jsonl

if TYPE_CHECKING:  # the sources load the entry point's modules: imported when a run is watched, not with the CLI's parser
    from runner.reports.monitor_sources import CheckpointEntry, DirectorySource, ModalMirror

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: only written to a terminal
RATE_WINDOW = 20  # train rows the step rate is measured over: recent enough to follow a change of speed
SPARK_POINTS = 24
SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 30
# Silence counts as stale past this many row intervals (evaluations and checkpoint saves take several), and never under a minute.
STALE_FACTOR = 10
STALE_MIN_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", type=Path, help="the run directory (the config's output_dir)")
    parser.add_argument("--refresh", type=_seconds, default=5.0, metavar="S", help="seconds between redraws (default: 5)")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")


def main(args: argparse.Namespace) -> int:
    """Watch until the run finishes or its scheduler job ends; Ctrl-C stops watching (the run goes on)."""
    try:
        return watch(args.run_dir, refresh=args.refresh, once=args.once)
    except KeyboardInterrupt:
        return 0


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Everything one frame shows, read at one moment: rendering it reads nothing else."""

    name: str
    where: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl
    total_steps: int | None = None  # plan.json, written when training starts
    summary: dict[str, Any] | None = None  # summary.json: the run finished
    attempts: list[dict[str, Any]] = field(default_factory=list)  # attempts.jsonl
    checkpoints: list[CheckpointEntry] = field(default_factory=list)
    progress_written_at: float | None = None  # metrics.csv: written when the run stops or finishes
    job: str | None = None  # e.g. "slurm job 12"
    job_state: JobState | None = None
    notes: tuple[str, ...] = ()


def watch(run_dir: Path, *, refresh: float = 5.0, once: bool = False, out: TextIO | None = None) -> int:
    """Print a frame every `refresh` seconds (one with `once`); stop after the frame that shows the run finished or its job ended."""
    from runner.reports import monitor_sources

    out = out or sys.stdout
    rundir.check_run_dir(run_dir)
    terminal = out.isatty() and not once
    unicode = _can_encode(out, SPARKS + "░·")
    source, source_job = None, None
    while True:
        handle = jobs.latest(run_dir)  # read again each time: the run may be submitted again while watched
        if source is None or (handle and handle.job_dir) != source_job:
            source, source_job = monitor_sources.source_for(run_dir, handle), handle and handle.job_dir
        snapshot = collect(run_dir, source, handle)
        frame = render(snapshot, time.time(), unicode=unicode)
        out.write((CLEAR if terminal else "") + frame + ("\n" if terminal or once else "\n\n"))  # a log keeps frames apart
        out.flush()
        if once or ended(snapshot):
            return 0
        time.sleep(refresh)


def collect(run_dir: Path, source: DirectorySource | ModalMirror, handle: JobHandle | None) -> Snapshot:
    """Read the run once: fetch (for a Modal run), the files, the checkpoint listing, the job's state."""
    from runner.backends import submit

    note = source.refresh()
    data = source.data_dir
    plan = metrics.read_plan(data)  # written atomically: whole or absent
    return Snapshot(
        name=run_dir.name or str(run_dir),
        where=source.where,
        rows=metrics.read(data),
        total_steps=plan.get("total_steps") if plan else None,
        summary=_read_json(data / rundir.SUMMARY_FILE),
        attempts=jsonl.read(data / rundir.ATTEMPTS_FILE).records,  # a line being written is read next time
        checkpoints=source.checkpoints(),
        progress_written_at=source.progress_written_at(),
        job=f"{handle.backend} job {handle.job_id}" if handle else None,
        job_state=submit.job_state(handle) if handle else None,  # never raises: UNKNOWN with the reason
        notes=(note,) if note else (),
    )


def ended(snapshot: Snapshot) -> bool:
    """Nothing more will happen: the run finished, or its scheduler job is over."""
    job = snapshot.job_state
    return snapshot.summary is not None or (job is not None and job.state != "UNKNOWN" and not job.active)


# ---- reading a Snapshot: pure functions of it and the time ----

def run_state(snapshot: Snapshot) -> str:
    """not started, training, stopped or finished."""
    if snapshot.summary is not None:
        return "finished"
    if not snapshot.attempts and not snapshot.rows:
        return "not started"
    if snapshot.job_state is not None and snapshot.job_state.state != "UNKNOWN" and not snapshot.job_state.active:
        return "stopped"
    activity = _last_activity(snapshot)
    # A stopping run writes metrics.csv after its last row; a resumed one has started since. One second
    # of slack: a volume lists whole seconds.
    if snapshot.progress_written_at is not None and activity is not None and snapshot.progress_written_at + 1 >= activity:
        return "stopped"
    return "training"


def attempt_rows(snapshot: Snapshot) -> list[dict[str, Any]]:
    """The timed rows of the current attempt: an earlier attempt's rows and the restart's gap say nothing of its speed."""
    rows = [row for row in snapshot.rows if row.get("time") is not None]
    start = _started_at(snapshot.attempts[-1]) if snapshot.attempts else None
    return [row for row in rows if row["time"] >= start] if start is not None else rows


def step_rate(snapshot: Snapshot) -> float | None:
    """Optimizer steps per second over the current attempt's recent train rows."""
    train = [row for row in attempt_rows(snapshot) if row.get("loss") is not None][-RATE_WINDOW:]
    if len(train) >= 2:
        steps, seconds = train[-1]["step"] - train[0]["step"], train[-1]["time"] - train[0]["time"]
        return steps / seconds if steps > 0 and seconds > 0 else None
    start = _started_at(snapshot.attempts[-1]) if snapshot.attempts else None
    if len(train) == 1 and start is not None:  # a first guess, start-up included, until a second row comes
        steps = train[0]["step"] - (snapshot.attempts[-1].get("resumed_from_step") or 0)
        seconds = train[0]["time"] - start
        return steps / seconds if steps > 0 and seconds > 0 else None
    return None


def eta_seconds(snapshot: Snapshot, now: float) -> float | None:
    """Seconds left at the current rate, counted from the last row (time since then is already spent)."""
    rate, total = step_rate(snapshot), _total(snapshot)
    rows = attempt_rows(snapshot)
    if rate is None or total is None or not rows:
        return None
    left = (total - _step(snapshot)) / rate - max(0.0, now - rows[-1]["time"])
    return max(0.0, left)


def silence(snapshot: Snapshot, now: float) -> tuple[float, float] | None:
    """(seconds since the last row, the usual seconds between rows) when a training run has gone quiet for much longer."""
    if run_state(snapshot) != "training":
        return None
    times = [row["time"] for row in attempt_rows(snapshot) if row.get("loss") is not None][-RATE_WINDOW:]
    if len(times) < 2:
        return None
    interval = statistics.median(later - earlier for earlier, later in itertools.pairwise(times))
    quiet = now - max(row["time"] for row in attempt_rows(snapshot))
    return (quiet, interval) if quiet > max(STALE_FACTOR * interval, STALE_MIN_S) else None


# ---- rendering ----

def render(snapshot: Snapshot, now: float, *, unicode: bool = True) -> str:
    """The frame of `snapshot` at time `now`, as lines of `label  value`."""
    dot = " · " if unicode else " - "
    state = run_state(snapshot)
    lines = [("run", f"{snapshot.name}{dot}{state}"), ("where", snapshot.where)]
    if snapshot.job is not None and snapshot.job_state is not None:
        lines.append(("job", _job_line(snapshot.job, snapshot.job_state)))
    if state == "not started":
        lines.append(("", "waiting for the run to start: nothing has been written yet"))
        return _table(lines, snapshot.notes)
    lines.append(("progress", _progress(snapshot, unicode)))
    lines.append(("time", _times(snapshot, now, state, dot)))
    lines += _metric_lines(snapshot, unicode, dot)
    lines.append(("checkpoint", _checkpoint_line(snapshot, now, dot)))
    lines.append(("attempts", _attempts_line(snapshot)))
    quiet = silence(snapshot, now)
    if quiet is not None:
        staging = [entry.step for entry in snapshot.checkpoints if entry.staging]
        writing = f"; the checkpoint of step {staging[-1]} is being written" if staging else ""
        warning = f"no new row for {duration(quiet[0])} (one came every {duration(quiet[1])}): the run may be stalled or killed"
        lines.append(("warning", warning + writing))
    if state == "stopped" and snapshot.job_state is not None and snapshot.job_state.active:
        lines.append(("", "stopped before the end: its job resumes it from the last checkpoint when it runs again"))
    elif state == "stopped":
        lines.append(("", "stopped before the end: the same train command resumes it from its last checkpoint"))
    return _table(lines, snapshot.notes)


def _job_line(job: str, state: JobState) -> str:
    text = f"{job}: {state.state}" + (f" ({state.reason})" if state.reason else "")
    if state.restarts:
        text += f", restarted {state.restarts}x"
    if state.exit_code and not state.active:
        text += f", exit code {state.exit_code}"
    return text


def _progress(snapshot: Snapshot, unicode: bool) -> str:
    step, total = _step(snapshot), _total(snapshot)
    if not snapshot.rows:
        return f"step 0/{total}, waiting for the first step" if total else "waiting for the first step"
    if not total:
        return f"step {step} (the total is known once training starts)"
    share = min(1.0, step / total)
    filled = round(share * BAR_WIDTH)
    bar = ("█" * filled + "░" * (BAR_WIDTH - filled)) if unicode else ("#" * filled + "-" * (BAR_WIDTH - filled))
    return f"step {step}/{total}  [{bar}] {share * 100:.1f}%"


def _times(snapshot: Snapshot, now: float, state: str, dot: str) -> str:
    starts = [start for start in (_started_at(attempt) for attempt in snapshot.attempts) if start is not None]
    first = starts[0] if starts else (snapshot.rows[0]["time"] if snapshot.rows and snapshot.rows[0].get("time") else None)
    times = [row["time"] for row in snapshot.rows if row.get("time") is not None]
    end = now if state == "training" else (max(times) if times else None)
    parts = [f"elapsed {duration(end - first)}" if first is not None and end is not None else "elapsed unknown"]
    if state == "training":
        rate = step_rate(snapshot)
        parts.append(_eta_text(snapshot, now))
        if rate is not None:
            parts.append(f"{rate:.2f} steps/s" if rate >= 0.1 else f"{1 / rate:.1f} s/step")
    elif state == "finished" and snapshot.summary and snapshot.summary.get("wall_time_s"):
        parts.append(f"last attempt trained {duration(snapshot.summary['wall_time_s'])}")
    return dot.join(parts)


def _eta_text(snapshot: Snapshot, now: float) -> str:
    eta = eta_seconds(snapshot, now)
    if silence(snapshot, now) is not None:
        return "ETA unknown while no rows arrive"
    if eta is not None:
        return f"ETA {duration(eta)}"
    if _total(snapshot) is None:
        return "ETA unknown until the run's total steps are known (plan.json)"
    if snapshot.rows and not attempt_rows(snapshot):
        return "ETA unknown: the rows carry no time (written by an older lockstep)"
    return "ETA unknown until two steps are logged"


def _metric_lines(snapshot: Snapshot, unicode: bool, dot: str) -> list[tuple[str, str]]:
    rows = snapshot.rows
    train = [row for row in rows if row.get("loss") is not None]
    evals = [row for row in rows if row.get("eval_loss") is not None]
    latest = train[-1] if train else {}
    epoch = next((row["epoch"] for row in reversed(rows) if row.get("epoch") is not None), None)
    memory = [row["memory_mb"] for row in rows if row.get("memory_mb") is not None]
    lines = [("epoch", f"{epoch:.2f}" if epoch is not None else "-")]
    if train:
        losses = [row["loss"] for row in train[-SPARK_POINTS:]]
        lines.append(("train loss", f"{latest['loss']:.4f}  " + (sparkline(losses) if unicode else f"(min {min(losses):.4f} of the last {len(losses)})")))
    else:
        lines.append(("train loss", "-"))
    if evals:
        best = min(evals, key=lambda row: row["eval_loss"])
        lines.append(("eval loss", f"{evals[-1]['eval_loss']:.4f} (step {evals[-1]['step']}){dot}best {best['eval_loss']:.4f} (step {best['step']})"))
    else:
        lines.append(("eval loss", "-"))
    lines.append(("lr", f"{latest['lr']:.3g}" if latest.get("lr") is not None else "-"))
    lines.append(("tokens/s", f"{latest['tokens_per_s']:,.0f}" if latest.get("tokens_per_s") is not None else "-"))
    lines.append(("memory", f"{memory[-1]:,.0f} MiB{dot}peak {max(memory):,.0f} MiB" if memory else "-"))
    return lines


def _checkpoint_line(snapshot: Snapshot, now: float, dot: str) -> str:
    complete = [entry for entry in snapshot.checkpoints if entry.complete]
    staging = [entry for entry in snapshot.checkpoints if entry.staging]
    text = (f"step {complete[-1].step}, written {duration(now - complete[-1].written_at)} ago" if complete else "none yet")
    if staging:
        text += f"{dot}writing step {staging[-1].step}"
    return text


def _attempts_line(snapshot: Snapshot) -> str:
    if not snapshot.attempts:
        return "-"
    current = snapshot.attempts[-1]
    where = ", ".join(str(current[key]) for key in ("host", "backend") if current.get(key))
    text = f"{len(snapshot.attempts)}" + (f" (this one on {where})" if where else "")
    resumes = [attempt["resumed_from_step"] for attempt in snapshot.attempts if attempt.get("resumed_from_step") is not None]
    if current.get("resumed_from_step") is not None:
        text += f", resumed from step {current['resumed_from_step']}"
    elif len(snapshot.attempts) > 1:
        text += ", started over from step 0" + (f"; last resumed from step {resumes[-1]}" if resumes else "")
    return text


def _table(lines: list[tuple[str, str]], notes: tuple[str, ...]) -> str:
    lines = lines + [("note", note) for note in notes]
    return "\n".join(f"{label:<11}{value}".rstrip() for label, value in lines)


def sparkline(values: list[float]) -> str:
    """One block character per value, from the lowest to the highest of them."""
    low, high = min(values), max(values)
    if high == low:
        return SPARKS[len(SPARKS) // 2] * len(values)
    return "".join(SPARKS[round((value - low) / (high - low) * (len(SPARKS) - 1))] for value in values)


def duration(seconds: float) -> str:
    """3s, 4m05s, 2h10m, 3d04h."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _step(snapshot: Snapshot) -> int:
    if snapshot.summary is not None and snapshot.summary.get("steps") is not None:
        return int(snapshot.summary["steps"])
    return max((row["step"] for row in snapshot.rows), default=0)


def _total(snapshot: Snapshot) -> int | None:
    if snapshot.total_steps:
        return int(snapshot.total_steps)
    return _step(snapshot) if snapshot.summary is not None else None


def _last_activity(snapshot: Snapshot) -> float | None:
    times = [row["time"] for row in snapshot.rows if row.get("time") is not None]
    times += [start for start in (_started_at(attempt) for attempt in snapshot.attempts[-1:]) if start is not None]
    return max(times, default=None)


def _started_at(attempt: dict[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(attempt["started_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or caught while being written: the next refresh reads it whole


def _can_encode(out: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value
