"""`lockstep preflight` and the preflight `lockstep train` runs first, through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from runner import config as config_module
from tests.helpers import DEMO_CONFIG, nothing_but_preflight, run_lockstep

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


def test_train_on_a_directory_that_is_not_a_run_writes_nothing_there(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (mine / "recommended_config.yaml").write_text("# my own recommendation\nlr: 1\n")
    before = {path.name: path.read_bytes() for path in mine.iterdir()}
    result = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={mine}")
    assert result.returncode == 5, result.stderr[-3000:]
    assert "holds no lockstep run (notes.txt); nothing was written there" in result.stderr
    assert {path.name: path.read_bytes() for path in mine.iterdir()} == before


def test_preflight_never_overwrites_a_file_it_did_not_write(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "recommended_config.yaml").write_text("# my own\n")
    result = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", "train.max_steps=1")
    assert result.returncode == 5 and "recommended_config.yaml was not written by lockstep preflight" in result.stderr, result.stderr
    assert [p.name for p in run_dir.iterdir()] == ["recommended_config.yaml"] and (run_dir / "recommended_config.yaml").read_text() == "# my own\n"


def test_preflight_on_a_finished_run_keeps_the_runs_record(tmp_path):
    run_dir = tmp_path / "run"
    args = (str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", "train.max_steps=2")
    assert run_lockstep("train", *args).returncode == 0
    record = {name: (run_dir / name).read_bytes() for name in ("preflight_report.json", "recommended_config.yaml")}
    result = run_lockstep("preflight", *args, "--hardware", "H100-80GB")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "planning for" in result.stdout and f"report not written: {run_dir} holds a run that has started" in result.stdout
    assert {name: (run_dir / name).read_bytes() for name in record} == record
    again = run_lockstep("train", *args)  # finished: nothing to do, and preflight's record of its start stays too
    assert again.returncode == 0 and "run already complete" in again.stderr and "preflight:" not in again.stderr
    assert {name: (run_dir / name).read_bytes() for name in record} == record
