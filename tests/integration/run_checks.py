"""Checks every output a finished run directory must have; shared by the end-to-end tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_complete_run(run_dir: Path, *, min_eval_drop: float = 0.30) -> dict:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["name_or_path"] and config["output_dir"]

    manifest = json.loads((run_dir / "manifest.json").read_text())
    for key in ("python", "packages", "cuda", "stack", "lock_sha256", "git", "config_sha256", "host", "backend", "started_at"):
        assert key in manifest, key
    for package in ("torch", "transformers", "trl", "peft"):
        assert manifest["packages"][package], package
    assert manifest["backend"] == "local"

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    with (run_dir / "metrics.csv").open() as handle:
        csv_rows = list(csv.DictReader(handle))
    assert len(csv_rows) == len(rows) > 0
    assert set(csv_rows[0]) == {"step", "epoch", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s", "memory_mb"}
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
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    return summary


GENERATE_SCRIPT = """
import sys
from pathlib import Path
from runner.inference import generate, load
model, tokenizer = load(Path(sys.argv[1]))
print(generate(model, tokenizer, "### Instruction:\\nWhat is the capital of France?\\n### Response:\\n"))
"""
