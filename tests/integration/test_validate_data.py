"""`lockstep validate-data`: preflight's data checks on their own, through the real command."""

from __future__ import annotations

import json

from runner.errors import ConfigError, DataError
from tests.helpers import DEMO_CONFIG, REPO_ROOT, run_lockstep

DEMO_DATA = REPO_ROOT / "runner" / "demo" / "data"


def test_every_bad_line_is_listed_in_order_with_file_and_line(tmp_path):
    bad = tmp_path / "bad data.jsonl"
    good = json.dumps({"prompt": "Q", "completion": "A"})
    lines = [good] + ["{not json"] * 3 + [json.dumps({"prompt": 3, "completion": "A"}), json.dumps({"text": "t"})] + ["[1, 2]"] * 2
    bad.write_text("\n".join(lines) + "\n")
    result = run_lockstep("validate-data", str(bad))
    assert result.returncode == DataError.exit_code, result.stderr
    listed = [line.strip() for line in result.stdout.splitlines() if line.startswith("    ")]
    assert [line.split(": ", 1)[0] for line in listed] == [f"{bad}:{n}" for n in range(2, 9)]  # all 7, not preflight's first 5
    assert f"{bad}:5: 'prompt' must be a string, got int" in listed
    assert f"{bad}:6: missing field(s) prompt, completion for format prompt_completion" in listed
    assert f"{bad}:7: expected a JSON object, got list" in listed
    assert "1 file(s): 1 failed" in result.stdout and "fix or remove those lines" in result.stderr


def test_the_demo_data_passes_with_warnings_and_token_lengths_from_the_config():
    result = run_lockstep("validate-data", str(DEMO_DATA / "train.jsonl"), str(DEMO_DATA / "valid.jsonl"), "--config", str(DEMO_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"✓ {DEMO_DATA / 'train.jsonl'}: 768 rows, format prompt_completion" in out
    assert "692 duplicate row(s)" in out and "64 of 64 validation row(s) also appear in the training data" in out
    assert "none longer than max_seq_len 96" in out and "2 file(s): 0 failed, 3 warning(s)" in out


def test_a_declared_format_the_rows_do_not_have_and_a_missing_file_fail(tmp_path):
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"text": "hello"}) + "\n")
    result = run_lockstep("validate-data", str(text), "--format", "messages")
    assert result.returncode == DataError.exit_code and f"{text}:1: missing field(s) messages" in result.stdout
    missing = tmp_path / "nowhere.jsonl"
    result = run_lockstep("validate-data", str(missing))
    assert result.returncode == DataError.exit_code and f"{missing}: cannot read" in result.stdout


def test_a_bad_config_is_reported_as_a_config_error(tmp_path):
    result = run_lockstep("validate-data", str(DEMO_DATA / "valid.jsonl"), "--config", str(DEMO_CONFIG), "--set", "train.max_seq_len=abc")
    assert result.returncode == ConfigError.exit_code and "train.max_seq_len" in result.stderr
