"""`lockstep generate` on a plain question: written as the run's training rows were, through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import config as config_module
from runner.demo import dataset
from runner.errors import ConfigError
from runner.training import prompts
from tests.helpers import DEMO_CONFIG, run_lockstep

README_QUESTION = "What is the capital of France?"
TEMPLATE_NOTE = ('prompt_completion run: the prompt goes in its training prompts\' template '
                 '"### Instruction:\\n{prompt}\\n### Response:\\n" (--raw sends it as given)')


@pytest.mark.slow
def test_the_readme_example_answers_what_the_demo_learned(demo_run):
    """`lockstep generate runs/demo --prompt "What is the capital of France?"`, as the README shows it."""
    result = run_lockstep("generate", str(demo_run[0]), "--prompt", README_QUESTION)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "The capital of France is Paris."  # the demo's training row for this question
    assert result.stderr.strip() == f"lockstep: {TEMPLATE_NOTE}"  # one line, and none of the libraries' noise


@pytest.mark.slow
def test_compare_base_sets_the_base_models_answer_beside_the_fine_tuned_one(demo_run):
    result = run_lockstep("generate", str(demo_run[0]), "--compare-base", "--prompt", README_QUESTION, "--max-new-tokens", "12")
    assert result.returncode == 0, result.stderr[-3000:]
    base, tuned = result.stdout.splitlines()
    assert tuned == "fine-tuned: The capital of France is Paris."
    assert base.startswith("base model: ") and "Paris" not in base  # random weights know nothing
    several = run_lockstep("generate", str(demo_run[0]), "--compare-base", "--prompt", README_QUESTION, "--prompt", "What's the colour of a plum?")
    rows = [json.loads(line) for line in several.stdout.splitlines()]
    assert [row["completion"] for row in rows] == ["The capital of France is Paris.", "The colour of a plum is purple."]
    assert all(row["base_completion"] != row["completion"] for row in rows)


@pytest.mark.slow
def test_raw_sends_the_prompt_as_given(demo_run):
    templated = dataset.PROMPT_TEMPLATE.format(instruction=README_QUESTION)
    result = run_lockstep("generate", str(demo_run[0]), "--raw", "--prompt", templated)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "The capital of France is Paris."
    assert "--raw: the prompt is sent as given" in result.stderr
    plain = run_lockstep("generate", str(demo_run[0]), "--raw", "--prompt", README_QUESTION)
    assert plain.returncode == 0 and plain.stdout.strip() != "The capital of France is Paris."  # what the template is for


@pytest.mark.parametrize("count", ["0", "-5", "many"])
def test_max_new_tokens_below_one_is_refused_before_anything_loads(tmp_path, count):
    result = run_lockstep("generate", str(tmp_path), "--prompt", README_QUESTION, "--max-new-tokens", count)
    assert result.returncode == ConfigError.exit_code
    refusal = f"argument --max-new-tokens: must be a whole number of at least 1 (the most tokens an answer may have), got '{count}'"
    assert refusal in result.stderr
    assert "Traceback" not in result.stderr


def run_config(tmp_path: Path, rows: list[dict], fmt: str = "auto") -> config_module.RunConfig:
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return config_module.load(str(DEMO_CONFIG), [f"data.train={train}", "data.valid=null", f"data.format={fmt}"])


def test_a_prompt_completion_run_without_a_template_sends_the_prompt_as_given(tmp_path):
    # The questions share a first word, not a line: that is no template.
    config = run_config(tmp_path, [{"prompt": "What is up?", "completion": "a"}, {"prompt": "What now?", "completion": "b"}])
    style = prompts.style(config)
    assert style.apply("Hello") == "Hello" and "share no template" in style.note


def test_a_prompt_already_in_the_template_is_not_wrapped_twice(tmp_path):
    rows = [{"prompt": f"Q:\n{question}\nA:\n", "completion": "x"} for question in ("one", "two")]
    style = prompts.style(run_config(tmp_path, rows))
    assert style.apply("three") == "Q:\nthree\nA:\n" and style.apply("Q:\nthree\nA:\n") == "Q:\nthree\nA:\n"


def test_messages_and_text_runs(tmp_path):
    messages = prompts.style(run_config(tmp_path, [{"messages": [{"role": "user", "content": "hi"}]}]))
    assert messages.fmt == "messages" and messages.apply("hi") == "hi" and "chat template" in messages.note
    text = prompts.style(run_config(tmp_path, [{"text": "### Instruction:\nhi\n"}, {"text": "### Instruction:\nho\n"}]))
    assert text.fmt == "text" and text.apply("hi") == "hi" and "sent as given" in text.note


def test_training_data_that_is_not_here_sends_the_prompt_as_given(tmp_path):
    config = run_config(tmp_path, [{"prompt": "a", "completion": "b"}])
    (tmp_path / "train.jsonl").unlink()  # a run trained elsewhere, its data not copied here
    style = prompts.style(config)
    assert style.apply("hi") == "hi" and "cannot be read here" in style.note and "train.jsonl" in style.note
