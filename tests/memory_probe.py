"""Measures the peak memory of real training runs and sets it beside runner.preflight.memory's estimate.

Measured: the peak resident memory (VmHWM) of `python -m runner.job` training a config, minus
that of a process which has only imported the same libraries. Each run is a fresh interpreter,
so one run's freed memory never hides another's peak. `python -m tests.memory_probe` prints the
Markdown table docs/memory.md shows; with `--live`, glibc returns every freed tensor to the
system, so the peak is that of live memory, set beside the estimate without its allocator part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

MIB = 2**20
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
LIBRARIES = "import torch, transformers, peft, trl, runner.engines.hf"
# glibc mmaps each block above this threshold and unmaps it when freed; setting it also stops the
# threshold from growing, so freed tensors leave the resident set at once.
RETURN_FREED = {"MALLOC_MMAP_THRESHOLD_": "65536"}


@dataclass(frozen=True, kw_only=True)
class Case:
    """One training configuration to measure (the knobs the estimate depends on)."""

    model: str = "small-llama"
    batch: int = 8
    seq_len: int = 256
    gradient_checkpointing: bool = False
    lora_rank: int = 16
    lora_dropout: float = 0.05
    steps: int = 3

    @property
    def label(self) -> str:
        checkpointing = ", checkpointing" if self.gradient_checkpointing else ""
        dropout = "" if self.lora_dropout else ", no dropout"
        return f"{self.model}, batch {self.batch}, seq {self.seq_len}{checkpointing}{dropout}"


def peak_rss_bytes() -> int:
    """This process's peak resident memory. VmHWM belongs to the current program image only; ru_maxrss
    also keeps the parent's resident size at fork, so it is the fallback where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _child(code: str, report: Path, live: bool) -> None:
    """Run `code` in a fresh interpreter that writes its peak resident memory (bytes) to `report`."""
    script = f"{code}\nfrom tests.memory_probe import peak_rss_bytes\nopen({str(report)!r}, 'w').write(str(peak_rss_bytes()))\n"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT)) | (RETURN_FREED if live else {})
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"measurement process failed ({done.returncode}):\n{done.stderr[-3000:]}")


@cache
def baseline_bytes(live: bool = False) -> int:
    """Peak resident memory of a process that has only imported the training libraries."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "peak"
        _child(LIBRARIES, report, live)
        return int(report.read_text())


def write_long_rows(path: Path, rows: int, seq_len: int) -> None:
    """`text` rows long enough that every one is cut to `seq_len` tokens: each batch is full length."""
    from runner.demo.tiny_model import training_texts

    text = " ".join(training_texts())  # the built-in tokenizer's own vocabulary: a few characters per token
    chars = seq_len * 8
    with path.open("w") as handle:
        for row in range(rows):
            start = row * 97 % len(text)
            handle.write(json.dumps({"text": (text[start:] + " " + text)[:chars]}) + "\n")


def overrides(case: Case, data: Path, output: Path) -> list[str]:
    return [
        f"model.name_or_path=builtin:{case.model}",
        f"data.train={data}",
        "data.valid=null",
        "data.format=text",
        f"lora.r={case.lora_rank}",
        f"lora.dropout={case.lora_dropout}",
        "train.precision=fp32",
        f"train.per_device_batch_size={case.batch}",
        f"train.max_seq_len={case.seq_len}",
        f"train.max_steps={case.steps}",
        f"train.gradient_checkpointing={case.gradient_checkpointing}",
        "checkpoint.every_percent=100",
        f"output_dir={output}",
    ]


def estimated_bytes(case: Case) -> dict[str, float]:
    from runner.preflight.memory import ModelShape, estimate

    shape = ModelShape.from_config(json.loads((model_dir(case.model) / "config.json").read_text()))
    result = estimate(shape, weights="fp32", compute_bytes=4, lora_rank=case.lora_rank, batch=case.batch, seq_len=case.seq_len,
                      gradient_checkpointing=case.gradient_checkpointing, overhead_bytes=0,
                      lora_dropout=case.lora_dropout > 0, device="cpu")
    parts = ("weights", "lora", "gradients", "optimizer", "activations", "logits", "overhead", "allocator")
    return {name: getattr(result, name) for name in parts} | {"total": result.total}


def model_dir(name: str) -> Path:
    """The built-in model's directory (built, or fetched and converted, on first use)."""
    from runner.models import resolve_model

    return Path(resolve_model(f"builtin:{name}"))


def measure(case: Case, *, live: bool = False) -> dict[str, object]:
    """Train `case` in a fresh process; its peak above the libraries' baseline, and the estimate (MiB).
    `live`: glibc returns freed memory at once (RETURN_FREED), and the estimate leaves out its allocator part."""
    model_dir(case.model)  # here, so that building (or fetching and converting) the model is no part of the run's peak
    baseline = baseline_bytes(live)
    with tempfile.TemporaryDirectory() as tmp:
        data, report = Path(tmp) / "train.jsonl", Path(tmp) / "peak"
        write_long_rows(data, case.batch * case.steps, case.seq_len)
        argv = [str(DEMO_CONFIG), *(f"--set={item}" for item in overrides(case, data, Path(tmp) / "run")), "--fresh"]
        started = time.perf_counter()
        _child(f"from runner.job import entry\nassert entry.main({argv!r}) == 0", report, live)
        seconds = time.perf_counter() - started
        peak = int(report.read_text())
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
    if summary["train_tokens"] != case.batch * case.seq_len * case.steps:  # a short row would make a smaller peak
        raise RuntimeError(f"{case.label}: trained {summary['train_tokens']} tokens, not {case.steps} full batches")
    estimate = estimated_bytes(case)
    estimated = (estimate["total"] - (estimate["allocator"] if live else 0)) / MIB
    measured = (peak - baseline) / MIB
    return {
        "case": case.label,
        "estimated_mib": round(estimated, 1),
        "measured_mib": round(measured, 1),
        "error": round((estimated - measured) / measured, 3),
        "parts_mib": {name: round(value / MIB, 1) for name, value in estimate.items()},
        "baseline_mib": round(baseline / MIB, 1),
        "seconds": round(seconds, 1),
    }


# The configurations docs/memory.md tabulates: batch, sequence length, checkpointing, dropout and
# model all vary. The estimate's one empirical factor was fitted on the first three.
FITTED = (Case(batch=8, seq_len=256), Case(batch=16, seq_len=512), Case(batch=4, seq_len=1024))
CASES = (
    *FITTED,
    Case(batch=16, seq_len=256),
    Case(batch=8, seq_len=512),
    Case(batch=8, seq_len=512, lora_dropout=0.0),
    Case(batch=4, seq_len=512, gradient_checkpointing=True),
    Case(batch=16, seq_len=512, gradient_checkpointing=True),
    Case(model="tiny-llama", batch=16, seq_len=1024),
    Case(model="tiny-llama", batch=32, seq_len=512),
    Case(model="tiny-llama", batch=8, seq_len=1024, lora_dropout=0.0),
    Case(batch=2, seq_len=256),
    Case(model="tiny-llama", batch=8, seq_len=256),
)


def device() -> str:
    import torch

    return f"CPU, {os.cpu_count()} cores ({platform.machine()}), torch {torch.__version__.split('+')[0]}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.memory_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--live", action="store_true", help="measure live memory (glibc returns freed memory at once)")
    live = parser.parse_args(argv).live
    print(f"{time.strftime('%Y-%m-%d')}, {device()}, peak RSS above {baseline_bytes(live) / MIB:.0f} MiB of imported libraries"
          f"{', ' + ' '.join(f'{k}={v}' for k, v in RETURN_FREED.items()) if live else ''}\n")
    allocator_column = "" if live else " of which allocator |"
    print(f"| configuration | factor | estimated MiB{' (no allocator part)' if live else ''} |{allocator_column} measured MiB | error |")
    print(f"|---|---|---:|{'' if live else '---:|'}---:|---:|")
    for case in CASES:
        row = measure(case, live=live)
        role = "fitted" if case in FITTED else "check"
        allocator = "" if live else f" {row['parts_mib']['allocator']:.0f} |"  # type: ignore[index]
        print(f"| {row['case']} | {role} | {row['estimated_mib']:.0f} |{allocator} {row['measured_mib']:.0f} | {row['error']:+.0%} |", flush=True)


if __name__ == "__main__":
    main()
