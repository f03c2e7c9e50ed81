"""`lockstep preflight` and the preflight `lockstep train` runs first, through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from runner import config as config_module
from tests.conftest import DEMO_CONFIG, nothing_but_preflight, run_lockstep

PREFLIGHT_EXIT = 12


def project(tmp_path: Path, train_lines: list[str], **train_settings: object) -> Path:
    (tmp_path / "train.jsonl").write_text("".join(line + "\n" for line in train_lines))
    settings = {"per_device_batch_size": 4, "max_seq_len": 64, **train_settings}
    config = {"model": {"name_or_path": "builtin:small-llama"}, "data": {"train": str(tmp_path / "train.jsonl")},
              "train": settings, "output_dir": str(tmp_path / "run")}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("lines, expected", [
    (['{"text": "fine"}', '{"text": "cut off'], "train.jsonl:2: not valid JSON"),
    (['{"text": "fine"}', '{"prompt": "no text"}'], "train.jsonl:2: missing field(s) text"),
    ([], "train.jsonl:1: the file is empty"),
])
def test_broken_data_stops_train_before_anything_starts(tmp_path, lines, expected):
    config = project(tmp_path, lines)
    result = run_lockstep("train", str(config))
    assert result.returncode == PREFLIGHT_EXIT, result.stderr[-3000:]
    assert "✗ data.train" in result.stderr and expected in result.stderr and "--waive data.train" in result.stderr
    run_dir = tmp_path / "run"
    assert nothing_but_preflight(run_dir)
    report = json.loads((run_dir / "preflight_report.json").read_text())
    (check,) = [c for c in report["checks"] if c["name"] == "data.train"]
    assert report["passed"] is False and check["status"] == "error" and expected in check["summary"]


def test_preflight_recommends_settings_that_fit_and_applies_them(tmp_path):
    long_rows = [json.dumps({"text": " ".join(f"w{i}" for i in range(300 + n))}) for n in range(8)]
    config = project(tmp_path, long_rows, per_device_batch_size=256, max_seq_len=256)
    result = run_lockstep("preflight", str(config), "--hardware", "M1-8GB", "--apply")
    assert result.returncode == PREFLIGHT_EXIT, result.stdout[-3000:] + result.stderr[-2000:]
    assert "✗ memory" in result.stdout and "--waive memory" in result.stderr
    applied = tmp_path / "run.recommended.yaml"
    recommended = config_module.load(applied)
    assert recommended.train.per_device_batch_size * recommended.train.gradient_accumulation == 256  # the effective batch is kept
    assert recommended.train.per_device_batch_size < 256
    assert applied.read_text() == (tmp_path / "run" / "recommended_config.yaml").read_text()
    again = run_lockstep("preflight", str(applied), "--hardware", "M1-8GB")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "✓ memory" in again.stdout and "recommended: keep the settings" in again.stdout

    waived = run_lockstep("preflight", str(config), "--hardware", "M1-8GB", "--waive", "memory")
    assert waived.returncode == 0 and "(waived)" in waived.stdout


def test_train_passes_preflight_on_the_demo_and_leaves_its_report(tmp_path):
    run_dir = tmp_path / "demo"
    result = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", "train.max_steps=2",
                          "--set", "checkpoint.every_percent=100")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "preflight: demo.yaml on --backend local" in result.stderr and "0 failed" in result.stderr
    report = json.loads((run_dir / "preflight_report.json").read_text())
    assert report["passed"] and report["tokens"]["max"] <= 96 and (run_dir / "summary.json").is_file()
