"""Training data: read JSONL, detect its format, and tokenize into input ids and loss labels.

Formats: `text` (loss on every token), `prompt`/`completion` (loss on the completion only),
chat `messages` (loss on assistant turns only). Tokenizing here rather than inside the
trainer keeps the exact tokens identical across trl releases, whose own preparation changes.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.config import BUILTIN_PREFIX, builtin_path, data_file_problem
from runner.errors import DataError

IGNORE_INDEX = -100  # label value the loss skips
FORMAT_FIELDS = {"text": ("text",), "prompt_completion": ("prompt", "completion"), "messages": ("messages",)}
ROLES = ("system", "user", "assistant", "tool")  # the roles chat templates render; tool for a tool's result
MAX_REPORTED = 10
ICONV = "iconv -f {encoding} -t utf-8 in.jsonl > out.jsonl"


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[list[int]]
    labels: list[list[int]]
    lines: list[int]  # the file line of each kept row
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
    """The rows that parse (each with its `_line`), and a `file:line: what is wrong` per line that does not
    (`file: what is wrong` when the whole file is: missing, a directory, UTF-16, a JSON array)."""
    path = resolve_path(ref)
    problem = data_file_problem(path)
    if problem:
        return [], [problem]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [], [f"{path}: cannot read: {exc.strerror or exc}"]
    problem = _whole_file_problem(path, raw)
    if problem:
        return [], [problem]
    rows, problems = [], []
    # Decoded line by line, so that one bad byte costs one line, not the file; a UTF-8 BOM (Windows editors write one) is skipped.
    for number, line in enumerate(raw.removeprefix(codecs.BOM_UTF8).splitlines(), start=1):
        row, problem = _parse_line(line)
        if problem:
            problems.append(f"{path}:{number}: {problem}")
        elif row is not None:
            rows.append({"_line": number, **row})
    if not rows and not problems:
        problems.append(f"{path}:1: the file is empty (no rows to train on)")
    return rows, problems


def _whole_file_problem(path: Path, raw: bytes) -> str | None:
    """A mistake that spoils every line alike, said once instead of once per line."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return f"{path}: the file is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8 ({ICONV.format(encoding='utf-16')})"
    if _is_json_array(raw):
        return f"{path}: this is a JSON array; lockstep reads JSON Lines, one object per line. Convert it: jq -c '.[]' in.json > out.jsonl"
    return None


def _is_json_array(raw: bytes) -> bool:
    """Whether the file is one JSON array (on one line or pretty-printed) rather than JSON Lines."""
    text = raw.decode("utf-8-sig", errors="replace").strip()
    if not text.startswith("["):
        return False
    try:
        json.loads(text.split("\n", 1)[0])
    except ValueError:
        return True  # a first line such as `[` or `[{...},`: the array goes on over several lines
    try:
        return isinstance(json.loads(text), list)
    except ValueError:
        return False  # several lines, each a JSON value of its own: JSON Lines whose rows are not objects


def _parse_line(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(row, None), (None, what is wrong), or (None, None) for a blank line."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = len(line[: exc.start].decode("utf-8", errors="replace")) + 1
        return None, (f"byte {line[exc.start : exc.end]!r} at column {column} is not UTF-8; "
                      f"save the file as UTF-8 (from Latin-1: {ICONV.format(encoding='latin1')})")
    if not text.strip():
        return None, None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    return row, None


def detect_format(rows: list[dict[str, Any]], declared: str, ref: str) -> str:
    fmt, problems = format_problems(rows, declared, ref)
    _raise_if(problems, resolve_path(ref))
    assert fmt is not None  # no problems means a format was found
    return fmt


def format_problems(rows: list[dict[str, Any]], declared: str, ref: str, *, turn_order: bool = False) -> tuple[str | None, list[str]]:
    """The rows' format (declared, or told by the first row's keys) and a `file:line:` problem per row that does not fit it.
    `turn_order` adds the order of chat turns (see turn_order_faults)."""
    fmt = declared if declared != "auto" else guess_format(rows[0])
    if fmt is None:
        first = rows[0]
        keys = ", ".join(k for k in first if k != "_line")
        return None, [f"{resolve_path(ref)}:{first['_line']}: cannot tell the data format from the keys ({keys}). "
                      "Use 'text', 'prompt' + 'completion', or 'messages', or set data.format."]
    path = resolve_path(ref)
    return fmt, [f"{path}:{row['_line']}: {fault}" for row in rows for fault in row_faults(row, fmt, turn_order=turn_order)]


def guess_format(row: dict[str, Any]) -> str | None:
    """The format whose fields `row` has (the first row decides for `data.format: auto`)."""
    return next((fmt for fmt, fields in FORMAT_FIELDS.items() if all(k in row for k in fields)), None)


def row_faults(row: dict[str, Any], fmt: str, *, turn_order: bool = False) -> list[str]:
    """What keeps `row` from being a row of `fmt`: missing fields, a value of the wrong type, a malformed conversation."""
    missing = [k for k in FORMAT_FIELDS[fmt] if k not in row]
    if missing:
        return [f"missing field(s) {', '.join(missing)} for format {fmt}"]
    if fmt != "messages":
        return [f"'{key}' must be a string, got {type(row[key]).__name__}" for key in FORMAT_FIELDS[fmt] if not isinstance(row[key], str)]
    faults = conversation_faults(row["messages"])
    return faults or (turn_order_faults(row["messages"]) if turn_order else [])


def conversation_faults(messages: Any) -> list[str]:
    """What a chat template cannot render, or training cannot learn from: not a list of {role, content}
    messages with known roles and text content, or no assistant turn."""
    if not isinstance(messages, list) or not messages:
        got = "an empty list" if messages == [] else type(messages).__name__
        return [f"'messages' must be a non-empty list of {{role, content}} objects, got {got}"]
    faults = [f"message {number}: {fault}" for number, message in enumerate(messages, start=1) for fault in _message_faults(message)]
    if not faults and not any(message["role"] == "assistant" for message in messages):
        faults.append('no assistant turn to learn from: the loss is taken on assistant turns only; add one ({"role": "assistant", "content": ...})')
    return faults


def _message_faults(message: Any) -> list[str]:
    if not isinstance(message, dict):
        return [f"must be a {{role, content}} object, got {type(message).__name__}"]
    missing = [key for key in ("role", "content") if key not in message]
    if missing:
        return [f"no {' and no '.join(repr(key) for key in missing)}; each message needs 'role' and 'content'"]
    faults = []
    if message["role"] not in ROLES:
        faults.append(f"role {message['role']!r} is not a role chat templates take; use system, user or assistant (tool for a tool's result)")
    if not isinstance(message["content"], str):
        faults.append(f"'content' must be a string, got {type(message['content']).__name__}")
    return faults


def turn_order_faults(messages: list[dict[str, Any]]) -> list[str]:
    """Where a well-formed conversation leaves the order chat templates expect: an optional system turn, then user
    and assistant turns in alternation, a tool's results after the assistant turn that called it. Templates that need
    the order refuse such rows; the others train on them as written, so training itself does not check it."""
    faults = []
    roles = [message["role"] for message in messages]
    for number, (before, role) in enumerate(zip([None, *roles], roles), start=1):
        if role == "system" and before is not None:
            faults.append(f"message {number} is a system turn; only the first message may be one")
        elif before in (None, "system") and role != "user" and role != "system":
            faults.append(f"the conversation starts with role {role!r} (message {number}); start it with a user turn, after an optional system turn")
        elif role == before and role != "tool":
            faults.append(f"messages {number - 1} and {number} are both {role} turns; user and assistant turns alternate: merge them or add the turn between")
        elif role == "tool" and before not in ("assistant", "tool"):
            faults.append(f"message {number}, a tool result, follows role {before!r}; a tool's result follows the assistant turn that called the tool")
    return faults


def tokenize(rows: list[dict[str, Any]], fmt: str, tokenizer: Any, max_seq_len: int, ref: str) -> Tokenized:
    input_ids, labels, lines, truncated, dropped = [], [], [], 0, 0
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
        lines.append(row["_line"])
    if not input_ids:
        raise DataError(
            f"{resolve_path(ref)}: no row has tokens to learn from after truncation to "
            f"train.max_seq_len={max_seq_len}; raise train.max_seq_len"
        )
    return Tokenized(input_ids, labels, lines, truncated, dropped)


def _segments(row: dict[str, Any], fmt: str, tokenizer: Any) -> list[tuple[str, bool, bool]]:
    """(text, trained, add_special_tokens) pieces; tokenized one by one so labels align exactly."""
    eos = tokenizer.eos_token or ""
    if fmt == "text":
        return [(_text(row["text"], "text") + eos, True, True)]
    if fmt == "prompt_completion":
        return [(_text(row["prompt"], "prompt"), False, True), (_text(row["completion"], "completion") + eos, True, False)]
    return _chat_segments(row["messages"], tokenizer)


def _chat_segments(messages: Any, tokenizer: Any) -> list[tuple[str, bool, bool]]:
    faults = conversation_faults(messages)
    if faults:
        raise ValueError("; ".join(faults))
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the 'messages' format needs a tokenizer with a chat template; use 'text' or 'prompt'/'completion'")
    # What chat templates raise for a conversation they refuse, e.g. "Conversation roles must alternate user/assistant".
    from jinja2 import TemplateError

    def render(upto: int, prompt: bool) -> str:
        try:
            return tokenizer.apply_chat_template(messages[:upto], tokenize=False, add_generation_prompt=prompt)
        except TemplateError as exc:
            raise ValueError(f"the model's chat template refuses this conversation: {exc}") from exc

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
