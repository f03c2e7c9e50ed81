"""Preflight's data checks: broken and empty files with file:line, malformed conversations (the same findings in
validate-data), duplicates, overlap and formats of train and valid, empty completions, token lengths and truncation as
training counts them, and max_seq_len suggestions that stay within the model's context."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from runner import config as config_module
from runner.preflight import data_checks, hardware, validate_data
from runner.preflight.memory import ModelShape
from runner.preflight.recommend import recommend


def demo_config(tmp_path: Path, train: str, valid: str | None = None, *overrides: str) -> config_module.RunConfig:
    path = tmp_path / "run.yaml"
    path.write_text(f"model: {{name_or_path: 'builtin:tiny-llama'}}\ndata: {{train: '{train}'" + (f", valid: '{valid}'" if valid else "")
                    + f"}}\noutput_dir: '{tmp_path / 'run'}'\n")
    return config_module.load(path, overrides)


def write_jsonl(path: Path, lines: list) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def split_check(checks: list, name: str):
    (check,) = [c for c in checks if c.name == name]
    return check


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


def test_a_problem_of_the_whole_file_is_fixed_as_it_says(tmp_path):
    train = tmp_path / "my data.json"
    train.write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
    check = split_check(data_checks.check_splits(data_checks.read_splits(demo_config(tmp_path, str(train)))), "data.train")
    assert check.status == "error" and check.summary.startswith(f"{train}: this is a JSON array; lockstep reads JSON Lines")
    assert check.fix == f"do as the problem says, then check the file: lockstep validate-data '{train}'"


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


def test_malformed_conversations_are_errors_with_file_line_and_the_fix(tmp_path):
    rows = [{"messages": [{"role": "usr", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "yo"}]},
            {"messages": [{"role": "user", "content": "only a question"}]},
            {"messages": [{"role": "user"}, {"role": "assistant", "content": "yo"}]},
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]},
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]},
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "ok"}]}]
    train = write_jsonl(tmp_path / "chat.jsonl", rows)
    (split,) = data_checks.read_splits(demo_config(tmp_path, train))
    assert split.problems == [
        f"{train}:1: message 1: role 'usr' is not a role chat templates take; use system, user or assistant (tool for a tool's result)",
        f"{train}:2: message 1: 'content' must be a string, got int",
        f'{train}:3: no assistant turn to learn from: the loss is taken on assistant turns only; add one ({{"role": "assistant", "content": ...}})',
        f"{train}:4: message 1: no 'content'; each message needs 'role' and 'content'",
        f"{train}:5: messages 1 and 2 are both user turns; user and assistant turns alternate: merge them or add the turn between",
        f"{train}:6: the conversation starts with role 'assistant' (message 1); start it with a user turn, after an optional system turn",
    ]
    check = split_check(data_checks.check_splits([split]), "data.train")
    assert check.status == "error" and check.summary.startswith(f"{train}:1: message 1: role 'usr'") and "(and 1 more)" in check.summary


def test_validate_data_and_preflight_find_the_same_problems(tmp_path):
    """A row with only a user turn, or a message without content, used to pass validate-data and fail train's preflight."""
    train = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "only a question"}]},
                                                  {"messages": [{"role": "user"}, {"role": "assistant", "content": "yo"}]}])
    (split,) = data_checks.read_splits(demo_config(tmp_path, train))
    out = io.StringIO()
    assert validate_data.validate([train], stream=out) == 1
    listed = [line.strip() for line in out.getvalue().splitlines() if line.startswith("    ")]
    assert listed == split.problems and [problem.split(": ", 1)[0] for problem in listed] == [f"{train}:1", f"{train}:2"]


def test_train_and_valid_in_different_formats_is_an_error_naming_both(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "Q", "completion": "A"}])
    valid = write_jsonl(tmp_path / "v.jsonl", [{"text": "Q A"}])
    check = split_check(data_checks.check_splits(data_checks.read_splits(demo_config(tmp_path, train, valid))), "data.formats")
    assert check.status == "error" and check.summary == f"{train} is in format prompt_completion, but {valid} is in format text"
    assert "eval loss would not measure what training learns" in check.fix
    same = write_jsonl(tmp_path / "same.jsonl", [{"prompt": "Q2", "completion": "A2"}])
    assert not [c for c in data_checks.check_splits(data_checks.read_splits(demo_config(tmp_path, train, same))) if c.name == "data.formats"]


def test_empty_completions_and_empty_assistant_turns_are_warnings_with_lines(tmp_path):
    train = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Q", "completion": "A"}, {"prompt": "Q2", "completion": " \n"}, {"prompt": "Q3", "completion": ""}])
    check = split_check(data_checks.check_splits(data_checks.read_splits(demo_config(tmp_path, train))), "data.empty")
    assert check.status == "warning" and check.summary == f"{train}: 2 row(s) with an empty completion, line(s) 2, 3"
    assert "teaches nothing but to stop without answering" in check.fix
    chat = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
                      {"role": "assistant", "content": " "}]}])
    check = split_check(data_checks.check_splits(data_checks.read_splits(demo_config(tmp_path, chat))), "data.empty")
    assert check.status == "warning" and check.summary == f"{chat}: 1 row(s) with an empty assistant turn, line(s) 2"


def long_rows(tmp_path: Path) -> str:
    """Short rows, two longer than the demo model's 256 positions (lines 3 and 5), the longest far longer."""
    rows = [{"text": f"row {n}"} for n in range(6)]
    rows[2], rows[4] = {"text": "word " * 3000}, {"text": "word " * 400}
    return write_jsonl(tmp_path / "long.jsonl", rows)


def token_counts(split: data_checks.Split, tokenizer) -> dict[int, int]:
    """line -> the row's token count, as training tokenizes it."""
    from runner.training import data

    tokenized = data.tokenize(split.rows, split.fmt, tokenizer, 10**9, split.ref)
    return {line: len(ids) for line, ids in zip(tokenized.lines, tokenized.input_ids)}


def test_the_longest_rows_are_named_and_no_suggestion_passes_the_models_context(tmp_path, demo_tokenizer):
    train = long_rows(tmp_path)
    (split,) = data_checks.read_splits(demo_config(tmp_path, train))
    check, stats = data_checks.check_tokens(split, demo_tokenizer, max_seq_len=96)  # the demo tokenizer records 256 positions
    tokens = token_counts(split, demo_tokenizer)
    assert check.status == "warning" and "2 row(s) (33.3%) are longer than max_seq_len 96" in check.summary
    assert check.summary.endswith(f"; longest: {train}:3 ({tokens[3]:,} tokens), {train}:5 ({tokens[5]:,} tokens)")
    assert check.fix == "the model reads at most 256 tokens; rows longer are cut: shorten or split them, and raise train.max_seq_len to 256 if memory allows"
    assert stats["max_positions"] == 256 and stats["longest_cut"] == [{"line": 3, "tokens": tokens[3]}, {"line": 5, "tokens": tokens[5]}]
    check, _ = data_checks.check_tokens(split, demo_tokenizer, max_seq_len=256, max_positions=256)
    assert check.fix == "the model reads at most 256 tokens; rows longer are cut: shorten or split them"
    check, _ = data_checks.check_tokens(split, demo_tokenizer, max_seq_len=96, max_positions=8192)  # a model that reads them whole
    assert check.fix.startswith(f"raise train.max_seq_len to {math.ceil(tokens[3] / 64) * 64} (covers 99% of rows)")


def test_the_recommended_max_seq_len_stays_within_the_models_context(tmp_path, demo_tokenizer):
    from runner.demo import tiny_model

    config = demo_config(tmp_path, long_rows(tmp_path), None, "train.max_seq_len=96")
    (split,) = data_checks.read_splits(config)
    _, stats = data_checks.check_tokens(split, demo_tokenizer, 96)
    shape = ModelShape.from_config(json.loads(tiny_model.model_config("tiny-llama").read_text()))
    advice = recommend(config, shape, hardware.profile("H100-80GB"), stats)
    assert advice.settings.max_seq_len == 256
    assert advice.reason.startswith("max_seq_len 256, the model's limit (33% are cut at 96): the model reads at most 256 tokens; "
                                    "rows longer are cut: shorten or split them")
    at_the_limit = demo_config(tmp_path, long_rows(tmp_path), None, "train.max_seq_len=256")
    _, stats = data_checks.check_tokens(split, demo_tokenizer, 256)
    assert recommend(at_the_limit, shape, hardware.profile("H100-80GB"), stats).settings.max_seq_len == 256
