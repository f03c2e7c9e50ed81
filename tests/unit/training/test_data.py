"""Data reading, format detection and tokenization with loss masks; the file mistakes people make (encodings, a JSON
array, a directory) and malformed conversations, each told with file:line and how to fix it."""

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
    [({"text": "a"}, "text"), ({"prompt": "a", "completion": "b"}, "prompt_completion"),
     ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages")],
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
    with pytest.raises(DataError, match=r"d.jsonl:1: no assistant turn to learn from"):
        data.tokenize(data.read_jsonl(path), "messages", demo_tokenizer, 96, path)
    with pytest.raises(DataError, match=r"d.jsonl:1: no assistant turn to learn from"):  # training's own reading says it first
        data.detect_format(data.read_jsonl(path), "messages", path)


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


def write_bytes(tmp_path: Path, content: bytes, name: str = "d.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def problems_of(ref: str) -> list[str]:
    return data.scan_jsonl(ref)[1]


def test_a_utf8_bom_is_skipped(tmp_path):
    path = write_bytes(tmp_path, b'\xef\xbb\xbf{"text": "first"}\r\n{"text": "second"}\r\n')
    assert [row["text"] for row in data.read_jsonl(path)] == ["first", "second"]


def test_bytes_that_are_not_utf8_are_told_per_line_with_the_bytes_and_the_fix(tmp_path):
    path = write_bytes(tmp_path, b'{"text": "caf\xe9"}\n{"text": "fine"}\n{"text": "na\xefve"}\n')
    rows, problems = data.scan_jsonl(path)
    assert [row["_line"] for row in rows] == [2]  # the other lines are still read
    assert problems == [f"{path}:1: byte b'\\xe9' at column 14 is not UTF-8; save the file as UTF-8 "
                        "(from Latin-1: iconv -f latin1 -t utf-8 in.jsonl > out.jsonl)",
                        f"{path}:3: byte b'\\xef' at column 13 is not UTF-8; save the file as UTF-8 "
                        "(from Latin-1: iconv -f latin1 -t utf-8 in.jsonl > out.jsonl)"]
    with pytest.raises(DataError) as info:  # how training itself reads it: a DataError, not a UnicodeDecodeError
        data.read_jsonl(path)
    assert f"{path}:1: byte b'\\xe9'" in str(info.value) and f"{path}:3:" in str(info.value)


def test_a_utf16_file_is_named_once(tmp_path):
    path = write_bytes(tmp_path, '{"text": "a"}\n{"text": "b"}\n'.encode("utf-16"))
    assert problems_of(path) == [f"{path}: the file is UTF-16 (it starts with a UTF-16 byte order mark); "
                                 "save it as UTF-8 (iconv -f utf-16 -t utf-8 in.jsonl > out.jsonl)"]


@pytest.mark.parametrize("content", ['[\n  {"text": "a"},\n  {"text": "b"}\n]\n', '[{"text": "a"}, {"text": "b"}]', '[\n  {"text": "a"},\n'])
def test_a_json_array_is_named_with_how_to_convert_it(tmp_path, content):
    path = write_bytes(tmp_path, content.encode(), "d.json")
    assert problems_of(path) == [f"{path}: this is a JSON array; lockstep reads JSON Lines, one object per line. "
                                 "Convert it: jq -c '.[]' in.json > out.jsonl"]


def test_json_lines_whose_rows_are_arrays_are_told_per_line(tmp_path):
    path = jsonl(tmp_path, ["[1, 2]", {"text": "a"}, "[3]"])
    assert problems_of(path) == [f"{path}:1: expected a JSON object, got list", f"{path}:3: expected a JSON object, got list"]


def test_a_directory_is_named_with_the_jsonl_files_it_holds(tmp_path):
    (tmp_path / "data").mkdir()
    for name in ("valid.jsonl", "train.jsonl", "notes.txt"):
        (tmp_path / "data" / name).write_text("")
    assert problems_of(str(tmp_path / "data")) == [f"{tmp_path / 'data'}: is a directory, not a JSON Lines file; "
                                                   "it holds train.jsonl, valid.jsonl: name one of them"]
    (tmp_path / "empty").mkdir()
    assert problems_of(str(tmp_path / "empty")) == [f"{tmp_path / 'empty'}: is a directory, not a JSON Lines file; name a .jsonl file"]


def test_a_missing_file_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert problems_of("nowhere.jsonl") == [f"nowhere.jsonl: does not exist (looked for {tmp_path.resolve() / 'nowhere.jsonl'})"]
    assert problems_of(str(tmp_path / "nowhere.jsonl")) == [f"{tmp_path / 'nowhere.jsonl'}: does not exist"]


MALFORMED_CONVERSATIONS = [  # (messages, what training says about the row)
    ([{"role": "usr", "content": "hi"}, {"role": "assistant", "content": "yo"}],
     "message 1: role 'usr' is not a role chat templates take; use system, user or assistant (tool for a tool's result)"),
    ([{"role": "user", "content": 5}, {"role": "assistant", "content": "yo"}], "message 1: 'content' must be a string, got int"),
    ([{"role": "user"}, {"role": "assistant", "content": "yo"}], "message 1: no 'content'; each message needs 'role' and 'content'"),
    ([{"content": "hi"}, {"role": "assistant", "content": "yo"}], "message 1: no 'role'; each message needs 'role' and 'content'"),
    (["hi", {"role": "assistant", "content": "yo"}], "message 1: must be a {role, content} object, got str"),
    ([], "'messages' must be a non-empty list of {role, content} objects, got an empty list"),
    ("hi", "'messages' must be a non-empty list of {role, content} objects, got str"),
]


def test_training_refuses_malformed_conversations_with_file_and_line(tmp_path):
    path = jsonl(tmp_path, [{"messages": messages} for messages, _ in MALFORMED_CONVERSATIONS])
    _, problems = data.format_problems(data.read_jsonl(path), "auto", path)
    assert problems == [f"{path}:{line}: {said}" for line, (_, said) in enumerate(MALFORMED_CONVERSATIONS, start=1)]
    with pytest.raises(DataError, match=r"d.jsonl:1: message 1: role 'usr'"):
        data.detect_format(data.read_jsonl(path), "auto", path)


TURN_ORDERS = [  # (roles, what is said of their order)
    (["user", "user", "assistant"], "messages 1 and 2 are both user turns; user and assistant turns alternate: merge them or add the turn between"),
    (["assistant", "user", "assistant"], "the conversation starts with role 'assistant' (message 1); start it with a user turn, after an optional system turn"),
    (["system", "assistant"], "the conversation starts with role 'assistant' (message 2); start it with a user turn, after an optional system turn"),
    (["user", "assistant", "system", "user", "assistant"], "message 3 is a system turn; only the first message may be one"),
    (["user", "tool", "assistant"], "message 2, a tool result, follows role 'user'; a tool's result follows the assistant turn that called the tool"),
    (["user", "assistant", "assistant"], "messages 2 and 3 are both assistant turns; user and assistant turns alternate: merge them or add the turn between"),
]


def test_the_order_of_turns_is_checked_where_asked_and_left_to_the_template_in_training(tmp_path):
    fine = [["user", "assistant"], ["system", "user", "assistant", "user", "assistant"], ["user", "assistant", "tool", "tool", "assistant"]]
    conversations = [roles for roles, _ in TURN_ORDERS] + fine
    path = jsonl(tmp_path, [{"messages": [{"role": role, "content": "x"} for role in roles]} for roles in conversations])
    rows = data.read_jsonl(path)
    _, problems = data.format_problems(rows, "messages", path, turn_order=True)
    assert problems == [f"{path}:{line}: {said}" for line, (_, said) in enumerate(TURN_ORDERS, start=1)]
    assert data.detect_format(rows, "messages", path) == "messages"  # training takes them: the template decides


def test_a_chat_template_that_refuses_a_conversation_is_a_data_error_with_its_line(tmp_path):
    from transformers import AutoTokenizer

    from runner.demo.tiny_model import CHAT_TEMPLATE, ensure_built

    strict = AutoTokenizer.from_pretrained(ensure_built())  # the demo tokenizer, its template first insisting on alternation
    strict.chat_template = ("{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
                            "{% endif %}{% endfor %}" + CHAT_TEMPLATE)
    path = jsonl(tmp_path, [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
                            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]}])
    with pytest.raises(DataError, match=r"d.jsonl:2: the model's chat template refuses this conversation: Conversation roles must alternate"):
        data.tokenize(data.read_jsonl(path), "messages", strict, 96, path)


def test_tokenized_rows_keep_their_file_lines(tmp_path, demo_tokenizer):
    path = jsonl(tmp_path, [{"prompt": "word " * 200, "completion": "x"}, "", {"prompt": "a", "completion": "b"}])
    assert data.tokenize(data.read_jsonl(path), "prompt_completion", demo_tokenizer, 32, path).lines == [3]  # row 1 is dropped
