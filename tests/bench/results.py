"""Render a benchmark run (pytest-benchmark's JSON) into docs/benchmarks.md, compared with the previous saved run.

    python -m tests.bench.results [--latest runs/bench/latest.json] [--storage runs/bench/history] [--docs docs/benchmarks.md]

`nox -s bench` and `make bench` run it after the benchmarks. The page's generated section lies
between BEGIN and END and is replaced whole each time; everything outside it (the
hand-measured history) is left as it is. The previous run is the newest one in the storage
(pytest-benchmark's --benchmark-autosave files) that is older than the latest.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

BEGIN = "<!-- results of the latest `nox -s bench` / `make bench` (tests/bench/results.py writes this section; edits are lost) -->"
END = "<!-- end of the generated section -->"
BUSY = 0.10  # a share of the CPU taken by other processes above which the page warns


def _num(digits: int = 0) -> Callable[[Any], str]:
    return lambda value: f"{value:,.{digits}f}"


def _seconds(value: Any) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:,.1f} s" if value < 100 else f"{value:,.0f} s"


def _share(value: Any) -> str:
    return f"{value:.1%}"


def _ratio(value: Any) -> str:
    return f"{value:.3g}" if value < 10 else f"{value:,.1f}"


def _gb(value: Any) -> str:
    return f"{value / 1e9:.2f} GB"


def _mib(value: Any) -> str:
    return f"{value:,.1f} MiB"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    show: Callable[[Any], str]
    compare: bool = False  # listed in "change vs previous"


@dataclass(frozen=True)
class Table:
    title: str
    source: str
    what: str
    columns: tuple[Column, ...]
    case: str = "-"  # the row's label when the benchmark has no parameters


# Appended to every table: the CPU other processes took during the benchmark (tests/bench/measure.py OtherProcesses).
OTHERS = Column("others_cpu_share", "others' CPU", _share)
TABLES: dict[str, Table] = {
    "test_lockstep_against_a_bare_trl_script": Table(
        "Training overhead: lockstep against a bare trl script", "tests/bench/test_training_overhead.py",
        "tokens/s = non-padding training tokens / trainer.train() wall time (evaluations and checkpoints included). Ratios are "
        "lockstep / bare of the medians over interleaved rounds, for lockstep as configured (a checkpoint every 10%) and with "
        "one checkpoint at the end; `checkpoints cost` = the throughput the periodic checkpoints take (1 - as configured / one "
        "checkpoint), `inside saves` = the loop's time spent in them; `step ratio` compares median single-step throughputs "
        "(robust to bursts of load). Start-up: process start to the first training step.",
        (Column("steps", "steps", _num()), Column("train_tokens", "tokens", _num()),
         Column("lockstep_tokens_per_s", "lockstep tokens/s", _num(), True), Column("bare_tokens_per_s", "bare trl tokens/s", _num(), True),
         Column("tokens_per_s_ratio", "ratio (target >= 0.98)", _ratio, True),
         Column("ratio_one_checkpoint", "ratio, one checkpoint", _ratio, True), Column("checkpoint_cost", "checkpoints cost", _share),
         Column("checkpoint_share", "inside saves", _share), Column("step_ratio", "step ratio (target >= 0.99)", _ratio),
         Column("lockstep_startup_s", "lockstep start-up", _seconds, True), Column("bare_startup_s", "bare start-up", _seconds),
         Column("rounds", "rounds", _num())),
    ),
    "test_start_up_and_resume_to_the_first_step": Table(
        "Start-up and resume to the first training step", "tests/bench/test_startup_resume.py",
        "The demo through `lockstep train`: from process start to the first training step's metrics row, fresh, and after "
        "a SIGTERM (checkpoint, exit 75) when the same command resumes; and from that SIGTERM to its checkpoint being "
        "durable. Medians over the rounds.",
        (Column("fresh_start_to_first_step_s", "fresh start", _seconds, True), Column("resume_to_first_step_s", "resume", _seconds, True),
         Column("resume_ratio", "resume / fresh", _ratio), Column("resumed_from_step", "resumed from step", _num()),
         Column("stop_to_durable_s", "SIGTERM to durable checkpoint", _seconds, True),
         Column("rounds", "rounds", _num())),
        case="tiny-llama (demo)",
    ),
    "test_per_step_overhead": Table(
        "Per-step overhead of the hf engine", "tests/bench/test_step_overhead.py",
        "What lockstep adds to each optimizer step, each part timed alone over 2,000 calls with the real objects: counting the "
        "step's tokens, the save trigger (background write's check, policy, stop flag), the metrics row (peak memory, a line "
        "appended to metrics.jsonl) and the progress bar; against the demo's step (its training time / steps, evaluations included).",
        (Column("token_count_us", "token count (us)", _num(1)), Column("save_trigger_us", "save trigger (us)", _num(1)),
         Column("metrics_row_us", "metrics row (us)", _num(1), True), Column("progress_bar_us", "progress bar (us)", _num(1)),
         Column("total_us", "together (us)", _num(1), True), Column("demo_step_ms", "demo step (ms)", _num(1)),
         Column("share_of_demo_step", "share of a step", _share, True)),
        case="tiny-llama (demo)",
    ),
    "test_checkpoint_overhead": Table(
        "Checkpoint overhead", "tests/bench/test_checkpoint_overhead.py",
        "A checkpoint every 10% of the steps and at the last. The loop waits only while a save takes the state (tensors "
        "copied to host memory); the write, hashes, fsyncs and rename happen behind it. `loop blocked` = the loop's time "
        "inside saves (per save: median), share = that / training time (target <= 1%); `write` = a save's background "
        "time (median).",
        (Column("steps", "steps", _num()), Column("checkpoints_saved", "saves", _num()), Column("checkpoint_mb", "checkpoint size", _mib),
         Column("blocked_per_save_ms", "loop blocked per save (ms)", _num(1), True), Column("write_per_save_ms", "write per save (ms)", _num(1)),
         Column("checkpoint_time_s", "loop blocked", _seconds, True), Column("train_time_s", "training time", _seconds, True),
         Column("checkpoint_share", "share (target <= 1%)", _share, True)),
    ),
    "test_lock_time_uv_against_pip_tools": Table(
        "Lock time: uv against pip-tools", "tests/bench/test_lock_time.py",
        "`runner.stacks.locking.compile_lock` on a copy of the stack's .in into a temporary file; cold = empty cache directories, "
        "warm = the same again with the cache the cold run filled. Ratio = pip-tools / uv.",
        (Column("stack", "stack", str), Column("packages", "packages", _num()),
         Column("uv_cold_s", "uv cold", _seconds, True), Column("pip_tools_cold_s", "pip-tools cold", _seconds, True),
         Column("cold_ratio", "cold ratio", _ratio, True), Column("uv_warm_s", "uv warm", _seconds, True),
         Column("pip_tools_warm_s", "pip-tools warm", _seconds, True), Column("warm_ratio", "warm ratio", _ratio, True),
         Column("uv_cache_mb", "uv cache", _mib), Column("pip_tools_cache_mb", "pip-tools cache", _mib),
         Column("rounds", "rounds", _num())),
        case="cpu stack",
    ),
    "test_image_build_cold_and_warm": Table(
        "Image build: cold against warm, and image size", "tests/bench/test_image_build.py",
        "Cold: `--no-cache`, every layer. Warm: after a change under runner/, only the code layers (an untimed ordinary build "
        "primed the cache first). Both from the wheelhouse, which they re-verify.",
        (Column("cold_s", "cold build", _seconds, True), Column("warm_s", "warm build", _seconds, True),
         Column("warm_share", "warm / cold", _share, True), Column("image_bytes", "image size", _gb, True), Column("layers", "layers", _num()),
         Column("tool", "builder", str)),
    ),
    "test_gpu_throughput": Table(
        "GPU throughput and MFU", "tests/bench/test_gpu_throughput.py",
        "Random-weight models of the published shapes, bf16, LoRA r16 all-linear; tokens/s = median step rate after warm-up; "
        "MFU = tokens/s x FLOPs per token / the device's dense bf16 peak (formula in tests/bench/flops.py).",
        (Column("device", "device", str), Column("seq_len", "seq len", _num()), Column("batch", "batch", _num()),
         Column("tokens_per_s", "tokens/s", _num(), True), Column("mfu", "MFU", _share, True),
         Column("grad_norm_first", "grad norm (first)", _num(3)), Column("grad_norm_last", "grad norm (last)", _num(3)),
         Column("peak_memory_gib", "peak memory GiB", _num(1))),
    ),
}


def find_previous(latest: dict[str, Any], storage: Path) -> dict[str, Any] | None:
    """The newest saved run in `storage` that is older than `latest` (its own autosave is skipped)."""
    newest: dict[str, Any] | None = None
    for path in sorted(storage.rglob("*.json")) if storage.is_dir() else ():
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        when = run.get("datetime", "")
        if when < latest["datetime"] and (newest is None or when > newest["datetime"]):
            newest = run
    return newest


def render(latest: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """The generated section's Markdown."""
    extra = latest.get("lockstep", {})
    compared = f"the run of {_when(previous['datetime'])}" if previous else "nothing (no earlier saved run)"
    if previous and _machine_differs(latest, previous):
        compared += f" on another machine ({describe_machine(previous['machine_info'])})"
    lines = [
        "## Latest run (generated)",
        "",
        f"- **date**: {_when(latest['datetime'])}",
        f"- **machine**: {describe_machine(latest['machine_info'])}",
        f"- **command**: `{extra.get('command', 'pytest tests/bench')}`",
        f"- **commit**: {_commit(latest.get('commit_info', {}))}",
        f"- **compared with**: {compared}",
    ]
    others, steal = _busiest(latest, "others_cpu_share"), _busiest(latest, "steal_share")
    if others >= BUSY or steal >= BUSY:
        lines.append(f"- **load**: other processes took up to {others:.0%} of the machine's CPU during a benchmark"
                     + (f", and the hypervisor stole up to {steal:.0%}" if steal >= BUSY else "")
                     + ": absolute times and rates from those benchmarks are distorted; the interleaved ratios less so")
    for outcome, label in (("skipped", "not measured"), ("failed", "failed")):
        grouped: dict[tuple[str, str], list[str]] = {}  # (test function, reason) -> cases
        for entry in extra.get(outcome, []):
            name = entry["test"].split("::")[-1]
            grouped.setdefault((name.split("[", 1)[0], entry["reason"]), []).append(_case({"name": name}, ""))
        for (function, reason), cases in grouped.items():
            shown = f"{function}[{', '.join(cases)}]" if any(cases) else function
            lines.append(f"- **{label}**: `{shown}`: {reason}")
    lines.append("")
    by_test: dict[str, list[dict[str, Any]]] = {}
    for bench in latest["benchmarks"]:
        by_test.setdefault(_function(bench), []).append(bench)
    before = {bench["fullname"]: bench for bench in (previous or {}).get("benchmarks", [])}
    for name, benches in by_test.items():
        table = TABLES.get(name)
        lines += _table(table, benches, before if previous else None) if table else _generic(name, benches)
    return "\n".join(lines).rstrip() + "\n"


def _table(table: Table, benches: list[dict[str, Any]], before: dict[str, dict[str, Any]] | None) -> list[str]:
    columns = [c for c in (*table.columns, OTHERS) if any(c.key in b["extra_info"] for b in benches)]
    header = ["case", *(c.label for c in columns), "change vs previous"]
    lines = [f"### {table.title} (`{table.source}`)", "", table.what, "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for bench in benches:
        info = bench["extra_info"]
        change = "-" if before is None else _change(columns, info, before.get(bench["fullname"]))
        cells = [_case(bench, table.case), *(_cell(c, info.get(c.key)) for c in columns), change]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _generic(name: str, benches: list[dict[str, Any]]) -> list[str]:
    """A benchmark without a table spec: its extra_info as it is."""
    lines = [f"### {name}", ""]
    for bench in benches:
        lines.append(f"- `{bench['name']}`: " + ", ".join(f"{k} = {v}" for k, v in bench["extra_info"].items()))
    return lines + [""]


def _cell(column: Column, value: Any) -> str:
    if value is None:
        return "-"
    try:
        return column.show(value)
    except (TypeError, ValueError):
        return str(value)


def _change(columns: list[Column], info: dict[str, Any], earlier: dict[str, Any] | None) -> str:
    """Relative change of the compared columns against the same benchmark in the previous run."""
    if earlier is None:
        return "new"
    changes = []
    for column in columns:
        now, then = info.get(column.key), earlier.get("extra_info", {}).get(column.key)
        if column.compare and isinstance(now, (int, float)) and isinstance(then, (int, float)) and then:
            changes.append(f"{column.label} {(now - then) / abs(then):+.1%}")
    return "; ".join(changes) or "-"


def _busiest(run: dict[str, Any], key: str) -> float:
    """The largest value of `key` among the run's benchmarks (0 if none recorded it)."""
    return max((bench["extra_info"].get(key) or 0.0 for bench in run["benchmarks"]), default=0.0)


def describe_machine(info: dict[str, Any]) -> str:
    cpu = info.get("cpu", {})
    parts = [f"{cpu.get('brand_raw') or info.get('processor') or 'unknown CPU'}, {cpu.get('count', '?')} cores"]
    if info.get("ram_gib"):
        parts.append(f"{info['ram_gib']:.0f} GiB RAM")
    parts.append(f"{info.get('system', '')} {info.get('machine', '')}".strip())
    versions = info.get("lockstep", {})
    parts.append(f"Python {info.get('python_version', '?')}" + (f", torch {versions['torch']}" if versions.get("torch") else ""))
    parts.append(f"GPU: {versions['gpu']}" if versions.get("gpu") else "no GPU")
    return "; ".join(parts)


def _machine_differs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return describe_machine(a["machine_info"]) != describe_machine(b["machine_info"])


def _function(bench: dict[str, Any]) -> str:
    return bench["name"].split("[", 1)[0]


def _case(bench: dict[str, Any], default: str = "-") -> str:
    match = re.search(r"\[(.*)\]$", bench["name"])
    return match.group(1) if match else default


def _when(stamp: str) -> str:
    return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M UTC")


def _commit(info: dict[str, Any]) -> str:
    if not info.get("id"):
        return "unknown"
    return f"`{info['id'][:12]}`" + (" with uncommitted changes" if info.get("dirty") else "")


def write_section(page: Path, section: str) -> None:
    """Put `section` between the markers in `page`, or before the page's first `## ` heading if it has none."""
    text = page.read_text() if page.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n\n{section.rstrip()}\n\n{END}\n"
    if BEGIN in text and END in text:
        start, stop = text.index(BEGIN), text.index(END) + len(END)
        text = text[:start] + block.rstrip("\n") + text[stop:]
    else:
        at = text.find("\n## ")
        text = text.rstrip("\n") + "\n\n" + block if at < 0 else text[: at + 1] + block + "\n" + text[at + 1 :]
    page.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.results", description=__doc__.splitlines()[0])
    parser.add_argument("--latest", type=Path, default=Path("runs/bench/latest.json"))
    parser.add_argument("--storage", type=Path, default=Path("runs/bench/history"), help="pytest-benchmark's --benchmark-storage")
    parser.add_argument("--docs", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    if not args.latest.is_file():
        print(f"no benchmark results in {args.latest}; run `nox -s bench` (or `make bench`) first", file=sys.stderr)
        return 1
    latest = json.loads(args.latest.read_text())
    if not latest.get("benchmarks"):
        print(f"{args.latest} holds no benchmark results (all skipped or failed?); {args.docs} left as it is", file=sys.stderr)
        return 1
    previous = find_previous(latest, args.storage)
    write_section(args.docs, render(latest, previous))
    print(f"wrote the results of {_when(latest['datetime'])} into {args.docs}"
          + (f", compared with the run of {_when(previous['datetime'])}" if previous else ""), file=sys.stderr)
    failed = latest.get("lockstep", {}).get("failed", [])
    if failed:
        print(f"{len(failed)} benchmark(s) failed (listed in {args.docs}): " + ", ".join(f["test"] for f in failed), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
