"""Checks on run directories and on running `lockstep` processes; shared by the integration tests."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from runner.training import checkpoint, metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_complete_run(run_dir: Path, *, min_eval_drop: float = 0.30, backend: str = "local") -> dict:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["name_or_path"] and config["output_dir"]

    manifest = json.loads((run_dir / "manifest.json").read_text())
    for key in ("python", "packages", "cuda", "stack", "lock_sha256", "git", "config_sha256", "host", "backend", "started_at"):
        assert key in manifest, key
    for package in ("torch", "transformers", "trl", "peft"):
        assert manifest["packages"][package], package
    assert manifest["backend"] == backend

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    with (run_dir / "metrics.csv").open() as handle:
        csv_rows = list(csv.DictReader(handle))
    assert len(csv_rows) == len(rows) > 0
    assert set(csv_rows[0]) == {"step", "epoch", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s", "memory_mb", "time"}
    train_rows = [r for r in rows if r["loss"] is not None]
    assert train_rows and all(r["tokens_per_s"] > 0 and r["memory_mb"] > 0 and r["lr"] is not None for r in train_rows)
    evals = [r["eval_loss"] for r in rows if r["eval_loss"] is not None]
    assert len(evals) >= 2

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == rows[-1]["step"]
    assert summary["first_eval_loss"] == evals[0] and summary["final_eval_loss"] == evals[-1]
    assert 1 - evals[-1] / evals[0] >= min_eval_drop, f"eval loss fell only from {evals[0]} to {evals[-1]}"
    assert summary["wall_time_s"] > 0 and summary["tokens_per_s"] > 0

    for name in ("loss", "lr", "memory"):
        png = (run_dir / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE) and len(png) > 5_000, name

    adapter = run_dir / "adapter"
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA"
    # Identical runs write identical files: PEFT's set of matched modules comes out sorted.
    assert adapter_config["target_modules"] == sorted(adapter_config["target_modules"]), adapter_config["target_modules"]
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    return summary


GENERATE_SCRIPT = """
import sys
from pathlib import Path
from runner.use.inference import generate, load
model, tokenizer = load(Path(sys.argv[1]))
print(generate(model, tokenizer, "### Instruction:\\nWhat is the capital of France?\\n### Response:\\n"))
"""


# What must match between an interrupted run and an uninterrupted one (speed and memory need not).
COMPARED = ("step", "epoch", "loss", "eval_loss", "lr", "grad_norm")


def trajectory(run_dir: Path) -> list[tuple]:
    return [tuple(row[key] for key in COMPARED) for row in metrics.read(run_dir)]


def adapter_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def assert_same_training(run_dir: Path, reference: Path, context: str = "") -> None:
    """Same per-step losses, evaluations and learning rates, and bitwise-identical adapter tensors."""
    assert trajectory(run_dir) == trajectory(reference), f"per-step metrics differ {context}"
    expected, actual = adapter_tensors(reference), adapter_tensors(run_dir)
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, f"adapter tensors differ {context}: {different[:5]}"


def logged_step(run_dir: Path) -> int:
    return max((row["step"] for row in metrics.read(run_dir)), default=0)


def staging_dirs(run_dir: Path) -> list[str]:
    try:
        return [name for name in os.listdir(run_dir / "checkpoints") if name.startswith(checkpoint.STAGING_PREFIX)]
    except FileNotFoundError:
        return []


def wait_until(condition: Callable[[], object], process: subprocess.Popen, what: str, timeout: float = 180, pause: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"lockstep exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(pause)


def assert_merge_keeps_the_outputs(run_dir: Path, adapter: Path) -> torch.Tensor:
    """`lockstep merge RUN` writes RUN/merged_model, whose logits equal base + adapter's (float32 rounding apart);
    returns those logits for a fixed token sequence."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from runner.demo.tiny_model import ensure_built
    from tests.helpers import run_lockstep

    result = run_lockstep("merge", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    tokens = torch.tensor([[5, 17, 42, 99, 250, 7, 311, 64, 128, 3]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(run_dir / "merged_model")(tokens).logits
        base = AutoModelForCausalLM.from_pretrained(ensure_built())
        plain = base(tokens).logits
        tuned = PeftModel.from_pretrained(base, adapter)(tokens).logits
    assert not any(name.endswith((".lora_A.weight", ".lora_B.weight")) for name in merged_names(run_dir))
    assert (tuned - plain).abs().max() > 1.0  # the adapter matters...
    assert (merged - tuned).abs().max() < 1e-4  # ...and the merged weights carry it
    return merged


def merged_names(run_dir: Path) -> list[str]:
    return list(load_file(str(run_dir / "merged_model" / "model.safetensors")))
