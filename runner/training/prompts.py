"""A prompt in a run's data format, as token ids: what training saw before the part it learned."""

from __future__ import annotations

import json
from typing import Any

from runner.config import RunConfig
from runner.training import data


def prompt_ids(tokenizer: Any, fmt: str, prompt: str) -> list[int]:
    """`messages` runs get the prompt as a user turn in the chat template with the assistant's turn
    opened; `prompt_completion` and `text` runs get it as is, with the tokenizer's special tokens,
    exactly as runner.training.data tokenizes the start of a row."""
    if fmt == "messages":
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def run_format(config: RunConfig) -> str:
    """The data format a run trained on: the declared one, else the one its training file's first row has."""
    if config.data.format != "auto":
        return config.data.format
    with data.resolve_path(config.data.train).open(encoding="utf-8") as handle:
        first = next(json.loads(line) for line in handle if line.strip())
    return data.guess_format(first) or "text"
