"""Ordinary data mistakes through the real `lockstep train` and `lockstep preflight`: a clear message with file:line
and a documented exit code, never a traceback, and nothing written beyond what the command records of itself."""

from __future__ import annotations

import json

import yaml

from runner.errors import DataError, PreflightError
from runner.rundir import LOCK_FILE
from runner.training import data
from tests.helpers import DEMO_CONFIG, nothing_but_preflight, run_lockstep

PREFLIGHT_RECORD = {"preflight_report.json", "recommended_config.yaml"}
RUN_START_RECORD = {"config.yaml", "manifest.json", "attempts.jsonl"}  # written as the run starts, before any data is read


def test_training_a_waived_latin1_file_ends_in_a_data_error_with_file_and_line(tmp_path):
    train = tmp_path / "latin1.jsonl"
    train.write_bytes(b'{"prompt": "Q", "completion": "caf\xe9"}\n{"prompt": "Q2", "completion": "fine"}\n')
    run_dir = tmp_path / "run"
    result = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", f"data.train={train}",
                          "--set", "data.valid=null", "--waive", "data.train")
    assert result.returncode == DataError.exit_code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "UnicodeDecodeError" not in result.stderr
    assert (f"lockstep: error: {train}: 1 problem(s) in the data:\n  {train}:1: byte b'\\xe9' at column 35 is not UTF-8; "
            "save the file as UTF-8 (from Latin-1: iconv -f latin1 -t utf-8 in.jsonl > out.jsonl)\n") in result.stderr
    written = {path.name for path in run_dir.iterdir()} - {LOCK_FILE}
    assert written <= PREFLIGHT_RECORD | RUN_START_RECORD, written  # no checkpoint, adapter, metrics or summary


def test_preflight_names_the_longest_rows_and_recommends_no_longer_max_seq_len_than_the_model_reads(tmp_path, demo_tokenizer):
    rows = [{"text": f"a short row {n}"} for n in range(20)]
    rows[6] = {"text": "word " * 20000}  # the model (builtin:tiny-llama) reads 256 positions
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run_dir = tmp_path / "run"
    result = run_lockstep("preflight", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", f"data.train={train}",
                          "--set", "data.valid=null", "--set", "data.format=text")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    tokens = len(data.tokenize(data.read_jsonl(str(train)), "text", demo_tokenizer, 10**9, str(train)).input_ids[6])
    assert f"1 row(s) (5.0%) are longer than max_seq_len 96 and will be cut; longest: {train}:7 ({tokens:,} tokens)" in result.stdout
    assert "fix: the model reads at most 256 tokens; rows longer are cut: shorten or split them" in result.stdout
    assert "train.max_seq_len: 96 -> 256" in result.stdout
    assert yaml.safe_load((run_dir / "recommended_config.yaml").read_text())["train"]["max_seq_len"] == 256
    report = json.loads((run_dir / "preflight_report.json").read_text())
    assert report["tokens"]["longest_cut"] == [{"line": 7, "tokens": tokens}] and report["tokens"]["max_positions"] == 256
    assert nothing_but_preflight(run_dir)


def test_train_refuses_a_valid_file_in_another_format_before_anything_starts(tmp_path):
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train.write_text(json.dumps({"prompt": "Q", "completion": "A"}) + "\n")
    valid.write_text(json.dumps({"text": "Q A"}) + "\n")
    run_dir = tmp_path / "run"
    result = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", f"data.train={train}",
                          "--set", f"data.valid={valid}", "--set", "data.format=auto")
    assert result.returncode == PreflightError.exit_code, result.stderr[-3000:]
    assert "✗ data.formats" in result.stderr and f"{train} is in format prompt_completion, but {valid} is in format text" in result.stderr
    assert "--waive data.formats" in result.stderr and nothing_but_preflight(run_dir)
