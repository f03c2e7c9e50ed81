"""Preflight's data checks: every bad line with file:line, empty and duplicate rows, train/valid
overlap, and the token lengths the run will see against train.max_seq_len.

Rows are tokenized exactly as training tokenizes them (runner.training.data), so the truncation share
reported here is the one training will have.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from runner.config import RunConfig
from runner.errors import DataError
from runner.problems import Check
from runner.training import data

SHOWN = 5  # file:line problems listed per check; the report's JSON keeps them all


@dataclass(frozen=True, kw_only=True)
class Split:
    name: str  # train, valid
    ref: str
    rows: list[dict[str, Any]]
    fmt: str | None
    problems: list[str]  # file:line: what is wrong; each one blocks training

    @property
    def path(self) -> str:
        return str(data.resolve_path(self.ref))


def read_splits(config: RunConfig) -> list[Split]:
    refs = {"train": config.data.train} | ({"valid": config.data.valid} if config.data.valid else {})
    return [read_split(name, ref, config.data.format) for name, ref in refs.items()]


def read_split(name: str, ref: str, declared: str) -> Split:
    try:
        rows, problems = data.scan_jsonl(ref)
    except (OSError, UnicodeDecodeError) as exc:
        return Split(name=name, ref=ref, rows=[], fmt=None, problems=[f"{data.resolve_path(ref)}: cannot read: {exc}"])
    fmt = None
    if rows:
        fmt, format_problems = data.format_problems(rows, declared, ref)
        problems += format_problems + (_wrong_types(rows, fmt, ref) if fmt else [])
    return Split(name=name, ref=ref, rows=rows, fmt=fmt, problems=sorted(problems, key=_line_number))


def _line_number(problem: str) -> int:
    """The N of a `path:N: what` problem (paths may hold colons too)."""
    number = problem.split(": ", 1)[0].rsplit(":", 1)[-1]
    return int(number) if number.isdigit() else 0


def _wrong_types(rows: list[dict[str, Any]], fmt: str, ref: str) -> list[str]:
    problems = []
    for row in rows:
        for key in data.FORMAT_FIELDS[fmt]:
            value = row.get(key)
            expected = list if key == "messages" else str
            if key in row and not isinstance(value, expected):
                what = "a list of {role, content} messages" if expected is list else "a string"
                problems.append(f"{data.resolve_path(ref)}:{row['_line']}: '{key}' must be {what}, got {type(value).__name__}")
    return problems


def check_splits(splits: list[Split]) -> list[Check]:
    """Parse errors and fields (blocking), then empty rows, duplicates and overlap (warnings)."""
    checks = []
    for split in splits:
        name = f"data.{split.name}"
        if split.problems:
            shown = split.problems[:SHOWN]
            more = f" (and {len(split.problems) - SHOWN} more)" if len(split.problems) > SHOWN else ""
            checks.append(Check(name=name, status="error", summary="; ".join(shown) + more,
                                fix="fix or remove these lines (formats: 'text', 'prompt' + 'completion', or 'messages'; data.format sets one)"))
        else:
            checks.append(Check(name=name, status="ok", summary=f"{split.path}: {len(split.rows)} rows, format {split.fmt}"))
    usable = [split for split in splits if not split.problems]
    for split in usable:
        checks += file_warnings(split)
    if len(usable) == 2:
        checks += overlap(*usable)
    return checks


def file_warnings(split: Split) -> list[Check]:
    """Empty and duplicate rows of one readable file."""
    return _empty_rows(split) + _duplicates(split)


def _empty_rows(split: Split) -> list[Check]:
    empty = [row["_line"] for row in split.rows if not any(_content(row[key]) for key in data.FORMAT_FIELDS[split.fmt or "text"])]
    if not empty:
        return []
    return [Check(name="data.empty", status="warning", summary=f"{split.path}: {len(empty)} row(s) with no text, line(s) {_lines(empty)}",
                  fix="remove them: they cost a step slot and teach nothing")]


def _duplicates(split: Split) -> list[Check]:
    first_seen: dict[str, int] = {}
    repeats = []
    for row in split.rows:
        key = _row_key(row)
        if key in first_seen:
            repeats.append(f"{row['_line']} (= {first_seen[key]})")
        else:
            first_seen[key] = row["_line"]
    if not repeats:
        return [Check(name="data.duplicates", status="ok", summary=f"{split.name}: no duplicate rows")]
    share = len(repeats) / len(split.rows)
    return [Check(name="data.duplicates", status="warning",
                  summary=f"{split.path}: {len(repeats)} duplicate row(s) ({share:.0%}), line(s) {_lines(repeats)}",
                  fix="remove the repeats unless they are meant to weigh more")]


def overlap(train: Split, valid: Split) -> list[Check]:
    train_keys = {_row_key(row) for row in train.rows}
    shared = [row["_line"] for row in valid.rows if _row_key(row) in train_keys]
    if not shared:
        return [Check(name="data.overlap", status="ok", summary="no validation row appears in the training data")]
    return [Check(name="data.overlap", status="warning",
                  summary=f"{valid.path}: {len(shared)} of {len(valid.rows)} validation row(s) also appear in the training data, line(s) {_lines(shared)}",
                  fix="remove them from one file: the eval loss measures memorisation on them, not generalisation")]


def token_lengths(split: Split, tokenizer: Any, max_seq_len: int) -> dict[str, Any]:
    """The distribution of the split's token lengths as training tokenizes them, and what truncation cuts."""
    tokenized = data.tokenize(split.rows, split.fmt or "text", tokenizer, 10**9, split.ref)  # untruncated
    lengths = sorted(len(ids) for ids in tokenized.input_ids)
    cut = [index for index, ids in enumerate(tokenized.input_ids) if len(ids) > max_seq_len]
    lost = sum(1 for index in cut if all(label == data.IGNORE_INDEX for label in tokenized.labels[index][:max_seq_len]))
    return {"rows": len(lengths), "tokens": sum(lengths), "min": lengths[0], "p50": _percentile(lengths, 50),
            "p95": _percentile(lengths, 95), "p99": _percentile(lengths, 99), "max": lengths[-1],
            "max_seq_len": max_seq_len, "truncated_rows": len(cut), "truncated_share": round(len(cut) / len(lengths), 4),
            "rows_losing_all_trained_tokens": lost, "rows_without_trained_tokens": tokenized.dropped}


def check_tokens(split: Split, tokenizer: Any, max_seq_len: int) -> tuple[Check, dict[str, Any] | None]:
    name = "data.tokens"
    try:
        stats = token_lengths(split, tokenizer, max_seq_len)
    except DataError as exc:
        return Check(name=name, status="error", summary=str(exc), fix="fix the row, or use the 'text' format for it"), None
    where = f"{split.name}: {stats['rows']} rows, {stats['tokens']:,} tokens; length p50 {stats['p50']}, p95 {stats['p95']}, max {stats['max']}"
    if not stats["truncated_rows"]:
        return Check(name=name, status="ok", summary=f"{where}; none longer than max_seq_len {max_seq_len}"), stats
    cover = _round_up(stats["p99"], 64)
    summary = (f"{where}; {stats['truncated_rows']} row(s) ({stats['truncated_share']:.1%}) are longer than max_seq_len {max_seq_len} "
               f"and will be cut" + (f", {stats['rows_losing_all_trained_tokens']} losing every trained token" if stats["rows_losing_all_trained_tokens"] else ""))
    return Check(name=name, status="warning", summary=summary,
                 fix=f"raise train.max_seq_len to {cover} (covers 99% of rows) if memory allows; the recommendation below says whether it does"), stats


def _percentile(sorted_values: list[int], percent: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, math.ceil(percent / 100 * len(sorted_values)) - 1)]


def _round_up(value: int, step: int) -> int:
    return max(step, math.ceil(value / step) * step)


def _row_key(row: dict[str, Any]) -> str:
    content = {key: value for key, value in row.items() if key != "_line"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _content(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list):
        return any(isinstance(message, dict) and _content(message.get("content")) for message in value)
    return value is not None


def _lines(items: list[Any]) -> str:
    shown = ", ".join(str(item) for item in items[:SHOWN])
    return shown + (f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else "")
