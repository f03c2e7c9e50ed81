"""The bundled demo data: distinct rows, validation held out from training, and the plain questions it answers."""

from __future__ import annotations

import json

from runner.demo import dataset
from runner.training import prompts


def rows_of(split: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (dataset.DATA_DIR / f"{split}.jsonl").read_text().splitlines()]


def key(row: dict[str, str]) -> tuple[str, str]:
    return row["prompt"], row["completion"]


def test_every_row_is_distinct_and_no_validation_row_is_in_training():
    train, valid = rows_of("train"), rows_of("valid")
    assert len(train) == dataset.TRAIN_SIZE and len(valid) == dataset.VALID_SIZE
    assert len({key(row) for row in train}) == len(train) and len({key(row) for row in valid}) == len(valid)
    assert not {key(row) for row in valid} & {key(row) for row in train}
    # Held out by question, too: no validation prompt is asked in training with another answer.
    assert not {row["prompt"] for row in valid} & {row["prompt"] for row in train}


def test_every_validation_answer_is_taught_in_training_by_another_phrasing():
    """Eval loss then measures carrying a learned fact to a new question, not guessing a fact never seen."""
    taught = {row["completion"] for row in rows_of("train")}
    assert all(row["completion"] in taught for row in rows_of("valid"))


def test_every_plain_question_is_in_training():
    """The questions a new user asks first (the README's example among them) are ones the demo learned."""
    prompts_in_training = {row["prompt"] for row in rows_of("train")}
    for task in dataset.TASKS:
        for subject in task.facts:
            assert dataset.example(task, subject, task.question)["prompt"] in prompts_in_training, (task.question, subject)
    france = dataset.PROMPT_TEMPLATE.format(instruction="What is the capital of France?")
    assert {"prompt": france, "completion": "The capital of France is Paris."} in rows_of("train")


def test_generate_finds_the_prompt_template_in_the_rows():
    prefix, suffix = prompts.template([row["prompt"] for row in rows_of("train")])
    assert prefix + "{instruction}" + suffix == dataset.PROMPT_TEMPLATE
