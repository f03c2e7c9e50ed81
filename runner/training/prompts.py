"""A prompt in a run's data format, as token ids: what training saw before the part it learned.

`lockstep generate` takes a plain question. A `messages` run gets it as a user turn in the chat template; a
`prompt_completion` run gets it in the template its training prompts were written in, found in the rows (the
lines every prompt starts and ends with); a `text` run gets it as is.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from typing import Any

from runner.config import RunConfig
from runner.training import data

# A template is in every row, so the first rows tell it; reading no more keeps a large file from delaying an answer.
TEMPLATE_SAMPLE_ROWS = 1000
RAW_HINT = "(--raw sends it as given)"


@dataclass(frozen=True)
class PromptStyle:
    """How a plain prompt becomes what the run's training saw, and the line that tells the person so."""

    fmt: str  # the format prompt_ids tokenizes for: `messages` applies the chat template, the others none
    note: str
    prefix: str = ""  # the lines every training prompt starts with
    suffix: str = ""  # the lines every training prompt ends with

    def apply(self, prompt: str) -> str:
        """`prompt` in the template; a prompt already written in it (a row of the data, say) is left as it is."""
        if prompt.startswith(self.prefix) and prompt.endswith(self.suffix):
            return prompt
        return self.prefix + prompt + self.suffix


def prompt_ids(tokenizer: Any, fmt: str, prompt: str) -> list[int]:
    """`messages` runs get the prompt as a user turn in the chat template with the assistant's turn
    opened; `prompt_completion` and `text` runs get it as is, with the tokenizer's special tokens,
    exactly as runner.training.data tokenizes the start of a row."""
    if fmt == "messages":
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def style(config: RunConfig, raw: bool = False) -> PromptStyle:
    """How `generate` writes a plain prompt for the run `config` trained: as its training rows were written."""
    if raw:
        return PromptStyle(fmt="text", note="--raw: the prompt is sent as given, in no template")
    if config.data.format in ("messages", "text"):
        return _style_of(config.data.format, [])
    try:
        rows = _first_rows(config.data.train)
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8
        return PromptStyle(fmt="text", note=f"the training data {config.data.train} cannot be read here ({_reason(exc)}), "
                                            "so the prompt is sent as given: write it as the training prompts were")
    return _style_of(_format_of(config, rows), rows)


def _style_of(fmt: str, rows: list[dict[str, Any]]) -> PromptStyle:
    if fmt == "messages":
        return PromptStyle(fmt=fmt, note=f"messages run: the prompt is a user turn in the tokenizer's chat template {RAW_HINT}")
    if fmt == "text":
        return PromptStyle(fmt=fmt, note="text run: the prompt is sent as given (the run trained on plain text)")
    prefix, suffix = template([row["prompt"] for row in rows if isinstance(row.get("prompt"), str)])
    if not prefix and not suffix:
        return PromptStyle(fmt=fmt, note="prompt_completion run: its training prompts share no template, so the prompt is sent as given")
    shown = json.dumps(prefix + "{prompt}" + suffix, ensure_ascii=False)
    return PromptStyle(fmt=fmt, prefix=prefix, suffix=suffix,
                       note=f"prompt_completion run: the prompt goes in its training prompts' template {shown} {RAW_HINT}")


def template(prompts: list[str]) -> tuple[str, str]:
    """The whole lines every prompt starts with and ends with: the template the rows were written in.

    Only whole lines count, so a word many questions happen to start with ("What") is not taken for the
    template; a prefix and suffix that would overlap in some prompt, or fewer than two distinct prompts, are no template."""
    if len(set(prompts)) < 2:
        return "", ""
    start = os.path.commonprefix(prompts)
    prefix = start[: start.rfind("\n") + 1]
    end = os.path.commonprefix([prompt[::-1] for prompt in prompts])[::-1]
    suffix = end[end.find("\n") :] if "\n" in end else ""
    if any(len(prompt) < len(prefix) + len(suffix) for prompt in prompts):
        return "", ""
    return prefix, suffix


def _format_of(config: RunConfig, rows: list[dict[str, Any]]) -> str:
    if config.data.format != "auto":
        return config.data.format
    return (data.guess_format(rows[0]) if rows else None) or "text"


def _first_rows(ref: str, limit: int = TEMPLATE_SAMPLE_ROWS) -> list[dict[str, Any]]:
    """The first `limit` rows of the JSONL file `ref` that are JSON objects (lines that are not are skipped)."""
    rows = []
    with data.resolve_path(ref).open(encoding="utf-8-sig") as handle:
        for line in itertools.islice((line for line in handle if line.strip()), limit):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
