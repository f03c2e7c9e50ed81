"""Preflight's data checks: every bad line with file:line (bytes that are not UTF-8, rows without the
format's fields, conversations a chat template cannot take), empty and duplicate rows, train/valid
overlap and formats, and the token lengths the run will see against train.max_seq_len and the model's context.

Rows are tokenized exactly as training tokenizes them (runner.training.data), so the truncation share
reported here is the one training will have.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from dataclasses import dataclass
from typing import Any

from runner.config import RunConfig
from runner.errors import DataError
from runner.problems import Check
from runner.training import data

SHOWN = 5  # file:line problems listed per check; the report's JSON keeps them all
LONGEST_SHOWN = 3  # the longest rows that will be cut, named by file:line


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
    """One file read and checked as preflight and validate-data both check it (the same functions, so they agree)."""
    rows, problems = data.scan_jsonl(ref)
    fmt = None
    if rows:
        fmt, format_problems = data.format_problems(rows, declared, ref, turn_order=True)
        problems += format_problems
    return Split(name=name, ref=ref, rows=rows, fmt=fmt, problems=sorted(problems, key=_line_number))


def _line_number(problem: str) -> int:
    """The N of a `path:N: what` problem (paths may hold colons too)."""
    number = problem.split(": ", 1)[0].rsplit(":", 1)[-1]
    return int(number) if number.isdigit() else 0


def check_splits(splits: list[Split]) -> list[Check]:
    """Parse errors and fields (blocking), then empty rows, duplicates and overlap (warnings) and the valid file's format (blocking)."""
    checks = []
    for split in splits:
        name = f"data.{split.name}"
        if split.problems:
            shown = split.problems[:SHOWN]
            more = f" (and {len(split.problems) - SHOWN} more)" if len(split.problems) > SHOWN else ""
            checks.append(Check(name=name, status="error", summary="; ".join(shown) + more, fix=_problems_fix(split)))
        else:
            checks.append(Check(name=name, status="ok", summary=f"{split.path}: {len(split.rows)} rows, format {split.fmt}"))
    usable = [split for split in splits if not split.problems]
    for split in usable:
        checks += file_warnings(split)
    if len(usable) == 2:
        checks += against_training(*usable)
    return checks


def _problems_fix(split: Split) -> str:
    if not any(_line_number(problem) for problem in split.problems):  # the file as a whole: the problem itself says what to do
        return f"do as the problem says, then check the file: lockstep validate-data {shlex.quote(split.path)}"
    return "fix or remove these lines (formats: 'text', 'prompt' + 'completion', or 'messages'; data.format sets one)"


def file_warnings(split: Split) -> list[Check]:
    """Empty and duplicate rows of one readable file."""
    return _empty_rows(split) + _duplicates(split)


EMPTY = {  # format -> (what such a row lacks, why it is worth fixing)
    "text": ("no text", "remove them: they cost a step slot and teach nothing"),
    "prompt_completion": ("an empty completion", "write the completion or remove the row: the loss is on the completion alone, "
                          "so an empty one teaches nothing but to stop without answering"),
    "messages": ("an empty assistant turn", "write the answer or remove the turn: the loss is on assistant turns alone, "
                 "so an empty one teaches nothing but to stop without answering"),
}


def _empty_rows(split: Split) -> list[Check]:
    fmt = split.fmt or "text"
    empty = [row["_line"] for row in split.rows if not _teaches(row, fmt)]
    if not empty:
        return []
    lacks, fix = EMPTY[fmt]
    return [Check(name="data.empty", status="warning", summary=f"{split.path}: {len(empty)} row(s) with {lacks}, line(s) {_lines(empty)}", fix=fix)]


def _teaches(row: dict[str, Any], fmt: str) -> bool:
    """Whether every part of `row` that training learns has text."""
    if fmt == "text":
        return bool(row["text"].strip())
    if fmt == "prompt_completion":
        return bool(row["completion"].strip())
    return all(message["content"].strip() for message in row["messages"] if message["role"] == "assistant")


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


def against_training(train: Split, other: Split) -> list[Check]:
    """What a second file (the validation data) is checked for against the training data."""
    return same_format(train, other) + overlap(train, other)


def same_format(train: Split, other: Split) -> list[Check]:
    # An error, not a warning: each file is tokenized in its own format, so the eval loss would be taken on other
    # tokens than the training loss (the whole text against the completion alone, or a chat template the training
    # rows never had): it would not measure what training learns, and best-checkpoint choices made on it mislead.
    if train.fmt == other.fmt:
        return []
    return [Check(name="data.formats", status="error",
                  summary=f"{train.path} is in format {train.fmt}, but {other.path} is in format {other.fmt}",
                  fix="convert one of them: each file is tokenized in its own format, so the eval loss would not measure what training learns")]


def overlap(train: Split, valid: Split) -> list[Check]:
    train_keys = {_row_key(row) for row in train.rows}
    shared = [row["_line"] for row in valid.rows if _row_key(row) in train_keys]
    if not shared:
        return [Check(name="data.overlap", status="ok", summary="no validation row appears in the training data")]
    return [Check(name="data.overlap", status="warning",
                  summary=f"{valid.path}: {len(shared)} of {len(valid.rows)} validation row(s) also appear in the training data, line(s) {_lines(shared)}",
                  fix="remove them from one file: the eval loss measures memorisation on them, not generalisation")]


def token_lengths(split: Split, tokenizer: Any, max_seq_len: int, max_positions: int | None = None) -> dict[str, Any]:
    """The distribution of the split's token lengths as training tokenizes them, and what truncation cuts;
    `max_positions` (the most tokens the model reads) is kept with them for the recommendation."""
    tokenized = data.tokenize(split.rows, split.fmt or "text", tokenizer, 10**9, split.ref)  # untruncated
    lengths = sorted(len(ids) for ids in tokenized.input_ids)
    cut = [index for index, ids in enumerate(tokenized.input_ids) if len(ids) > max_seq_len]
    lost = sum(1 for index in cut if all(label == data.IGNORE_INDEX for label in tokenized.labels[index][:max_seq_len]))
    longest = sorted(cut, key=lambda index: -len(tokenized.input_ids[index]))[:LONGEST_SHOWN]
    return {"rows": len(lengths), "tokens": sum(lengths), "min": lengths[0], "p50": _percentile(lengths, 50),
            "p95": _percentile(lengths, 95), "p99": _percentile(lengths, 99), "max": lengths[-1],
            "max_seq_len": max_seq_len, "truncated_rows": len(cut), "truncated_share": round(len(cut) / len(lengths), 4),
            "rows_losing_all_trained_tokens": lost, "rows_without_trained_tokens": tokenized.dropped,
            "longest_cut": [{"line": tokenized.lines[index], "tokens": len(tokenized.input_ids[index])} for index in longest],
            "max_positions": max_positions}


def check_tokens(split: Split, tokenizer: Any, max_seq_len: int, max_positions: int | None = None) -> tuple[Check, dict[str, Any] | None]:
    """Token lengths against max_seq_len; `max_positions`, the most tokens the model reads (its config's
    max_position_embeddings), caps what is suggested; without it, the tokenizer's record of it is used."""
    name = "data.tokens"
    try:
        stats = token_lengths(split, tokenizer, max_seq_len, max_positions or tokenizer_positions(tokenizer))
    except DataError as exc:
        return Check(name=name, status="error", summary=str(exc), fix="fix the row, or use the 'text' format for it"), None
    where = f"{split.name}: {stats['rows']} rows, {stats['tokens']:,} tokens; length p50 {stats['p50']}, p95 {stats['p95']}, max {stats['max']}"
    if not stats["truncated_rows"]:
        return Check(name=name, status="ok", summary=f"{where}; none longer than max_seq_len {max_seq_len}"), stats
    longest = ", ".join(f"{split.path}:{row['line']} ({row['tokens']:,} tokens)" for row in stats["longest_cut"])
    summary = (f"{where}; {stats['truncated_rows']} row(s) ({stats['truncated_share']:.1%}) are longer than max_seq_len {max_seq_len} "
               f"and will be cut" + (f", {stats['rows_losing_all_trained_tokens']} losing every trained token" if stats["rows_losing_all_trained_tokens"] else "")
               + f"; longest: {longest}")
    return Check(name=name, status="warning", summary=summary, fix=_longer_rows_fix(stats, max_seq_len)), stats


def tokenizer_positions(tokenizer: Any) -> int | None:
    """The most tokens the model reads, as its tokenizer records it (model_max_length); transformers leaves a
    huge placeholder there when the tokenizer's files do not say."""
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < 10**9 else None


def _longer_rows_fix(stats: dict[str, Any], max_seq_len: int) -> str:
    """Raise max_seq_len to cover 99% of rows, but never past what the model reads: rows longer than that are cut whatever max_seq_len says."""
    cover, positions = _round_up(stats["p99"], 64), stats["max_positions"]
    if positions is None or cover <= positions:
        return f"raise train.max_seq_len to {cover} (covers 99% of rows) if memory allows; the recommendation below says whether it does"
    capped = f"the model reads at most {positions} tokens; rows longer are cut: shorten or split them"
    return capped + (f", and raise train.max_seq_len to {positions} if memory allows" if max_seq_len < positions else "")


def _percentile(sorted_values: list[int], percent: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, math.ceil(percent / 100 * len(sorted_values)) - 1)]


def _round_up(value: int, step: int) -> int:
    return max(step, math.ceil(value / step) * step)


def _row_key(row: dict[str, Any]) -> str:
    content = {key: value for key, value in row.items() if key != "_line"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _lines(items: list[Any]) -> str:
    shown = ", ".join(str(item) for item in items[:SHOWN])
    return shown + (f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else "")
