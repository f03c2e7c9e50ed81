"""`lockstep validate-data`: preflight's data checks on their own, through the real command."""

from __future__ import annotations

import json

from runner.errors import ConfigError, DataError
from runner.training import data
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


def test_the_demo_data_passes_with_token_lengths_from_the_config():
    result = run_lockstep("validate-data", str(DEMO_DATA / "train.jsonl"), str(DEMO_DATA / "valid.jsonl"), "--config", str(DEMO_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"✓ {DEMO_DATA / 'train.jsonl'}: 768 rows, format prompt_completion" in out
    assert f"✓ {DEMO_DATA / 'valid.jsonl'}: 64 rows, format prompt_completion" in out
    assert "none longer than max_seq_len 96" in out and "2 file(s): 0 failed" in out


def test_a_declared_format_the_rows_do_not_have_and_a_missing_file_fail(tmp_path):
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"text": "hello"}) + "\n")
    result = run_lockstep("validate-data", str(text), "--format", "messages")
    assert result.returncode == DataError.exit_code and f"{text}:1: missing field(s) messages" in result.stdout
    missing = tmp_path / "nowhere.jsonl"
    result = run_lockstep("validate-data", str(missing))
    assert result.returncode == DataError.exit_code and f"    {missing}: does not exist\n" in result.stdout


def test_a_bad_config_is_reported_as_a_config_error(tmp_path):
    result = run_lockstep("validate-data", str(DEMO_DATA / "valid.jsonl"), "--config", str(DEMO_CONFIG), "--set", "train.max_seq_len=abc")
    assert result.returncode == ConfigError.exit_code and "train.max_seq_len" in result.stderr


def listed_problems(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if line.startswith("    ") and not line.startswith("    fix: ")]


def test_common_file_mistakes_are_named_with_their_fix_and_nothing_is_written(tmp_path):
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "saved by a Windows editor"}\n')
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n{"text": "fine"}\n{"text": "cr\xe8me"}\n')
    (tmp_path / "array.json").write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=2))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "a"}\n')
    before = sorted(tmp_path.rglob("*"))
    files = [tmp_path / name for name in ("bom.jsonl", "latin1.jsonl", "array.json", "data")]
    result = run_lockstep("validate-data", *map(str, files))
    assert result.returncode == DataError.exit_code, result.stdout + result.stderr
    assert f"✓ {files[0]}: 1 rows, format text" in result.stdout  # a UTF-8 BOM is accepted silently
    iconv = "save the file as UTF-8 (from Latin-1: iconv -f latin1 -t utf-8 in.jsonl > out.jsonl)"
    assert listed_problems(result.stdout) == [
        f"{files[1]}:1: byte b'\\xe9' at column 14 is not UTF-8; {iconv}",
        f"{files[1]}:3: byte b'\\xe8' at column 13 is not UTF-8; {iconv}",
        f"{files[2]}: this is a JSON array; lockstep reads JSON Lines, one object per line. Convert it: jq -c '.[]' in.json > out.jsonl",
        f"{files[3]}: is a directory, not a JSON Lines file; it holds train.jsonl: name one of them",
    ]
    assert "4 file(s): 3 failed" in result.stdout and "Traceback" not in result.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_conversations_are_checked_as_preflight_checks_them(tmp_path):
    chat = tmp_path / "chat.jsonl"
    rows = [[{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
            [{"role": "usr", "content": "hi"}, {"role": "assistant", "content": "yo"}],
            [{"role": "user", "content": 5}, {"role": "assistant", "content": "yo"}],
            [{"role": "user", "content": "a question and no answer"}],
            [{"role": "user"}, {"role": "assistant", "content": "yo"}],
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]]
    chat.write_text("".join(json.dumps({"messages": messages}) + "\n" for messages in rows))
    result = run_lockstep("validate-data", str(chat))
    assert result.returncode == DataError.exit_code, result.stdout + result.stderr
    assert [problem.split(": ", 1)[0] for problem in listed_problems(result.stdout)] == [f"{chat}:{n}" for n in range(2, 7)]
    assert f"{chat}:2: message 1: role 'usr' is not a role chat templates take; use system, user or assistant" in result.stdout
    assert f"{chat}:3: message 1: 'content' must be a string, got int" in result.stdout
    assert f"{chat}:4: no assistant turn to learn from" in result.stdout
    assert f"{chat}:5: message 1: no 'content'; each message needs 'role' and 'content'" in result.stdout
    assert f"{chat}:6: messages 1 and 2 are both user turns" in result.stdout


def test_a_valid_file_in_another_format_fails_and_empty_completions_warn(tmp_path):
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train.write_text(json.dumps({"prompt": "Q", "completion": "A"}) + "\n" + json.dumps({"prompt": "Q2", "completion": "  "}) + "\n")
    valid.write_text(json.dumps({"text": "Q A"}) + "\n")
    result = run_lockstep("validate-data", str(train), str(valid))
    assert result.returncode == DataError.exit_code, result.stdout + result.stderr
    assert f"✗ {train} is in format prompt_completion, but {valid} is in format text" in result.stdout
    assert f"⚠ {train}: 1 row(s) with an empty completion, line(s) 2" in result.stdout
    assert "2 file(s): 1 failed, 1 warning(s)" in result.stdout


def test_rows_longer_than_the_model_reads_are_named_and_no_longer_max_seq_len_is_suggested(tmp_path, demo_tokenizer):
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"prompt": "Q", "completion": text}) + "\n" for text in ["A", "word " * 5000, "B"]))
    result = run_lockstep("validate-data", str(long), "--config", str(DEMO_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    tokens = len(data.tokenize(data.read_jsonl(str(long)), "prompt_completion", demo_tokenizer, 10**9, str(long)).input_ids[1])
    assert f"1 row(s) (33.3%) are longer than max_seq_len 96 and will be cut; longest: {long}:2 ({tokens:,} tokens)" in result.stdout
    assert ("fix: the model reads at most 256 tokens; rows longer are cut: shorten or split them, "
            "and raise train.max_seq_len to 256 if memory allows") in result.stdout
