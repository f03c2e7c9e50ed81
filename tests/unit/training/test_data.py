"""Data reading, format detection and tokenization with loss masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.demo import dataset
from runner.errors import DataError
from runner.training import data


def jsonl(tmp_path: Path, rows: list, name: str = "d.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_bundled_demo_data_matches_its_generator():
    for split, rows in dataset.generate().items():
        assert (dataset.DATA_DIR / f"{split}.jsonl").read_text() == dataset.render(rows)


def test_demo_split_sizes():
    splits = dataset.generate()
    assert len(splits["train"]) == dataset.TRAIN_SIZE and len(splits["valid"]) == dataset.VALID_SIZE


def test_bad_json_lines_are_reported_with_file_and_line(tmp_path):
    path = jsonl(tmp_path, [{"text": "ok"}, "{not json", "[1, 2]"])
    with pytest.raises(DataError) as info:
        data.read_jsonl(path)
    message = str(info.value)
    assert f"{path}:2: not valid JSON" in message and f"{path}:3: expected a JSON object" in message


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="empty"):
        data.read_jsonl(jsonl(tmp_path, []))


@pytest.mark.parametrize(
    "row, fmt",
    [({"text": "a"}, "text"), ({"prompt": "a", "completion": "b"}, "prompt_completion"), ({"messages": []}, "messages")],
)
def test_format_detection(tmp_path, row, fmt):
    path = jsonl(tmp_path, [row])
    assert data.detect_format(data.read_jsonl(path), "auto", path) == fmt


def test_undetectable_format_and_missing_fields(tmp_path):
    path = jsonl(tmp_path, [{"question": "a"}])
    with pytest.raises(DataError, match=r"cannot tell the data format from the keys \(question\)"):
        data.detect_format(data.read_jsonl(path), "auto", path)
    path = jsonl(tmp_path, [{"prompt": "a", "completion": "b"}, {"prompt": "only"}], "two.jsonl")
    with pytest.raises(DataError, match=r"two.jsonl:2: missing field\(s\) completion"):
        data.detect_format(data.read_jsonl(path), "auto", path)


def test_prompt_completion_trains_on_completion_only(tmp_path, demo_tokenizer):
    path = jsonl(tmp_path, [{"prompt": "### Instruction:\nhi\n### Response:\n", "completion": "The capital of Peru is Lima."}])
    out = data.tokenize(data.read_jsonl(path), "prompt_completion", demo_tokenizer, 96, path)
    ids, labels = out.input_ids[0], out.labels[0]
    trained = [i for i, label in zip(ids, labels) if label != data.IGNORE_INDEX]
    assert demo_tokenizer.decode(trained) == "The capital of Peru is Lima.<|eos|>"
    assert labels[0] == data.IGNORE_INDEX


def test_text_trains_on_everything(tmp_path, demo_tokenizer):
    path = jsonl(tmp_path, [{"text": "The sky is blue."}])
    out = data.tokenize(data.read_jsonl(path), "text", demo_tokenizer, 96, path)
    assert out.labels[0] == out.input_ids[0]
    assert demo_tokenizer.decode(out.input_ids[0]) == "The sky is blue.<|eos|>"


def test_messages_train_on_assistant_turns_only(tmp_path, demo_tokenizer):
    messages = [
        {"role": "user", "content": "What colour is snow?"},
        {"role": "assistant", "content": "white"},
        {"role": "user", "content": "And coal?"},
        {"role": "assistant", "content": "black"},
    ]
    path = jsonl(tmp_path, [{"messages": messages}])
    out = data.tokenize(data.read_jsonl(path), "messages", demo_tokenizer, 96, path)
    ids, labels = out.input_ids[0], out.labels[0]
    assert demo_tokenizer.decode(ids) == demo_tokenizer.apply_chat_template(messages, tokenize=False)
    trained = demo_tokenizer.decode([i for i, label in zip(ids, labels) if label != data.IGNORE_INDEX])
    assert trained == "white<|eos|>\nblack<|eos|>\n"


def test_messages_without_assistant_is_an_error_with_line(tmp_path, demo_tokenizer):
    path = jsonl(tmp_path, [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match=r"d.jsonl:1: no assistant message"):
        data.tokenize(data.read_jsonl(path), "messages", demo_tokenizer, 96, path)


def test_truncation_and_dropping(tmp_path, demo_tokenizer):
    long_prompt = "word " * 200
    path = jsonl(tmp_path, [{"prompt": long_prompt, "completion": "x"}, {"prompt": "a", "completion": "b " * 100}])
    out = data.tokenize(data.read_jsonl(path), "prompt_completion", demo_tokenizer, 32, path)
    assert out.dropped == 1 and out.truncated == 1
    assert len(out.input_ids) == 1 and len(out.input_ids[0]) == 32


def test_nothing_left_to_learn_is_an_error(tmp_path, demo_tokenizer):
    path = jsonl(tmp_path, [{"prompt": "word " * 200, "completion": "x"}])
    with pytest.raises(DataError, match="raise train.max_seq_len"):
        data.tokenize(data.read_jsonl(path), "prompt_completion", demo_tokenizer, 16, path)


@pytest.mark.parametrize("fmt", ["prompt_completion", "messages", "text"])
def test_a_prompt_is_tokenized_as_training_saw_the_start_of_a_row(tmp_path, demo_tokenizer, fmt):
    from runner.training.prompts import prompt_ids

    question, answer = "### Instruction:\nWhat is the capital of Peru?\n### Response:\n", "The capital of Peru is Lima."
    row = {"prompt_completion": {"prompt": question, "completion": answer}, "text": {"text": question + answer},
           "messages": {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}}[fmt]
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(row) + "\n")
    ids = prompt_ids(demo_tokenizer, fmt, question)
    tokenized = data.tokenize(data.read_jsonl(str(path)), fmt, demo_tokenizer, 96, str(path))
    assert tokenized.input_ids[0][: len(ids)] == ids and len(ids) < len(tokenized.input_ids[0])
    if fmt != "text":  # the prompt is exactly the part training took no loss on
        assert all(label == data.IGNORE_INDEX for label in tokenized.labels[0][: len(ids)])
        assert tokenized.labels[0][len(ids)] != data.IGNORE_INDEX
