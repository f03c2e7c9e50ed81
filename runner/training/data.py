"""Training data: read JSONL, detect its format, and tokenize into input ids and loss labels.

Formats: `text` (loss on every token), `prompt`/`completion` (loss on the completion only),
chat `messages` (loss on assistant turns only). Tokenizing here rather than inside the
trainer keeps the exact tokens identical across trl releases, whose own preparation changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.config import BUILTIN_PREFIX, builtin_path
from runner.errors import DataError

IGNORE_INDEX = -100  # label value the loss skips
FORMAT_FIELDS = {"text": ("text",), "prompt_completion": ("prompt", "completion"), "messages": ("messages",)}
MAX_REPORTED = 10


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[list[int]]
    labels: list[list[int]]
    truncated: int  # kept rows cut to max_seq_len
    dropped: int  # rows with no loss tokens left after truncation

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids in self.input_ids)


def resolve_path(ref: str) -> Path:
    return builtin_path(ref) if ref.startswith(BUILTIN_PREFIX) else Path(ref)


def read_jsonl(ref: str) -> list[dict[str, Any]]:
    """All rows of a JSONL file; every unparsable line is reported with file:line."""
    rows, problems = scan_jsonl(ref)
    _raise_if(problems, resolve_path(ref))
    return rows


def scan_jsonl(ref: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows that parse (each with its `_line`), and a `file:line: what is wrong` per line that does not."""
    path = resolve_path(ref)
    rows, problems = [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(row, dict):
                problems.append(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
                continue
            rows.append({"_line": number, **row})
    if not rows and not problems:
        problems.append(f"{path}:1: the file is empty (no rows to train on)")
    return rows, problems


def detect_format(rows: list[dict[str, Any]], declared: str, ref: str) -> str:
    fmt, problems = format_problems(rows, declared, ref)
    _raise_if(problems, resolve_path(ref))
    assert fmt is not None  # no problems means a format was found
    return fmt


def format_problems(rows: list[dict[str, Any]], declared: str, ref: str) -> tuple[str | None, list[str]]:
    """The rows' format (declared, or told by the first row's keys) and a `file:line:` problem per row that does not fit it."""
    fmt = declared if declared != "auto" else guess_format(rows[0])
    if fmt is None:
        first = rows[0]
        keys = ", ".join(k for k in first if k != "_line")
        return None, [f"{resolve_path(ref)}:{first['_line']}: cannot tell the data format from the keys ({keys}). "
                      "Use 'text', 'prompt' + 'completion', or 'messages', or set data.format."]
    return fmt, missing_fields(rows, fmt, ref)


def guess_format(row: dict[str, Any]) -> str | None:
    """The format whose fields `row` has (the first row decides for `data.format: auto`)."""
    return next((fmt for fmt, fields in FORMAT_FIELDS.items() if all(k in row for k in fields)), None)


def missing_fields(rows: list[dict[str, Any]], fmt: str, ref: str) -> list[str]:
    """A `file:line: missing field(s)` problem per row that lacks a field of `fmt`."""
    problems = []
    for row in rows:
        missing = [k for k in FORMAT_FIELDS[fmt] if k not in row]
        if missing:
            problems.append(f"{resolve_path(ref)}:{row['_line']}: missing field(s) {', '.join(missing)} for format {fmt}")
    return problems


def tokenize(rows: list[dict[str, Any]], fmt: str, tokenizer: Any, max_seq_len: int, ref: str) -> Tokenized:
    input_ids, labels, truncated, dropped = [], [], 0, 0
    for row in rows:
        try:
            segments = _segments(row, fmt, tokenizer)
        except (TypeError, ValueError, KeyError) as exc:
            raise DataError(f"{resolve_path(ref)}:{row['_line']}: {exc}") from exc
        ids: list[int] = []
        row_labels: list[int] = []
        for text, trained, special in segments:
            piece = tokenizer(text, add_special_tokens=special)["input_ids"]
            ids += piece
            row_labels += piece if trained else [IGNORE_INDEX] * len(piece)
        cut = len(ids) > max_seq_len
        ids, row_labels = ids[:max_seq_len], row_labels[:max_seq_len]
        if all(label == IGNORE_INDEX for label in row_labels):
            dropped += 1
            continue
        truncated += cut
        input_ids.append(ids)
        labels.append(row_labels)
    if not input_ids:
        raise DataError(
            f"{resolve_path(ref)}: no row has tokens to learn from after truncation to "
            f"train.max_seq_len={max_seq_len}; raise train.max_seq_len"
        )
    return Tokenized(input_ids, labels, truncated, dropped)


def _segments(row: dict[str, Any], fmt: str, tokenizer: Any) -> list[tuple[str, bool, bool]]:
    """(text, trained, add_special_tokens) pieces; tokenized one by one so labels align exactly."""
    eos = tokenizer.eos_token or ""
    if fmt == "text":
        return [(_text(row["text"], "text") + eos, True, True)]
    if fmt == "prompt_completion":
        return [(_text(row["prompt"], "prompt"), False, True), (_text(row["completion"], "completion") + eos, True, False)]
    return _chat_segments(row["messages"], tokenizer)


def _chat_segments(messages: Any, tokenizer: Any) -> list[tuple[str, bool, bool]]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of {role, content} objects")
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError("each message needs 'role' and 'content'")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the 'messages' format needs a tokenizer with a chat template; use 'text' or 'prompt'/'completion'")
    render = lambda upto, prompt: tokenizer.apply_chat_template(  # noqa: E731
        messages[:upto], tokenize=False, add_generation_prompt=prompt
    )
    full = render(len(messages), False)
    segments, done = [], ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix, upto = render(index, True), render(index + 1, False)
        if not (full.startswith(prefix) and full.startswith(upto) and prefix.startswith(done)):
            raise ValueError("the chat template does not render conversations prefix by prefix; use 'text' instead")
        segments += [(prefix[len(done) :], False, False), (upto[len(prefix) :], True, False)]
        done = upto
    if not segments:
        raise ValueError("no assistant message to learn from")
    if len(full) > len(done):
        segments.append((full[len(done) :], False, False))
    return [segment for segment in segments if segment[0]]


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"'{name}' must be a string, got {type(value).__name__}")
    return value


def _raise_if(problems: list[str], path: Path) -> None:
    if not problems:
        return
    shown = problems[:MAX_REPORTED]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more} more" if more else ""
    raise DataError(f"{path}: {len(problems)} problem(s) in the data:\n  " + "\n  ".join(shown) + tail)
