"""Preflight's data checks: broken and empty files with file:line, duplicates and overlap, token lengths and
truncation as training counts them."""

from __future__ import annotations

import json
from pathlib import Path

from runner import config as config_module
from runner.preflight import data_checks


def demo_config(tmp_path: Path, train: str, valid: str | None = None, *overrides: str) -> config_module.RunConfig:
    path = tmp_path / "run.yaml"
    path.write_text(f"model: {{name_or_path: 'builtin:tiny-llama'}}\ndata: {{train: '{train}'" + (f", valid: '{valid}'" if valid else "")
                    + f"}}\noutput_dir: '{tmp_path / 'run'}'\n")
    return config_module.load(path, overrides)


def write_jsonl(path: Path, lines: list) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def test_broken_data_is_reported_with_file_and_line(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "fine"}, "{broken", {"prompt": "no text field"}, {"text": 7}])
    (check,) = [c for c in data_checks.check_splits(data_checks.read_splits(demo_config(tmp_path, train))) if c.name == "data.train"]
    assert check.status == "error"
    assert f"{train}:2: not valid JSON" in check.summary
    assert f"{train}:3: missing field(s) text" in check.summary and f"{train}:4: 'text' must be a string" in check.summary


def test_empty_file_is_an_error(tmp_path):
    train = write_jsonl(tmp_path / "empty.jsonl", [])
    (check,) = data_checks.check_splits(data_checks.read_splits(demo_config(tmp_path, train)))
    assert check.status == "error" and f"{train}:1: the file is empty" in check.summary


def test_duplicates_overlap_and_empty_rows_are_warnings(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}, {"text": "b"}, {"text": "a"}, {"text": "  "}])
    valid = write_jsonl(tmp_path / "v.jsonl", [{"text": "b"}, {"text": "c"}])
    checks = {c.name: c for c in data_checks.check_splits(data_checks.read_splits(demo_config(tmp_path, train, valid))) if c.status != "ok"}
    assert checks["data.empty"].status == "warning" and "line(s) 4" in checks["data.empty"].summary
    assert checks["data.duplicates"].status == "warning" and "3 (= 1)" in checks["data.duplicates"].summary
    assert checks["data.overlap"].status == "warning" and "1 of 2 validation row(s)" in checks["data.overlap"].summary


def test_token_lengths_and_truncation_match_training(tmp_path, demo_tokenizer):
    from runner.training import data

    rows = [{"text": "word " * n} for n in (5, 10, 200)]
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    (split,) = data_checks.read_splits(demo_config(tmp_path, train))
    check, stats = data_checks.check_tokens(split, demo_tokenizer, max_seq_len=64)
    lengths = [len(ids) for ids in data.tokenize(split.rows, "text", demo_tokenizer, 10**9, train).input_ids]
    assert stats["max"] == max(lengths) > 64 and stats["truncated_rows"] == 1 and stats["truncated_share"] == round(1 / 3, 4)
    assert check.status == "warning" and "raise train.max_seq_len" in check.fix
    assert data.tokenize(split.rows, "text", demo_tokenizer, 64, train).truncated == stats["truncated_rows"]
