"""`lockstep generate RUN --prompt TEXT | --file FILE`: the finished run's base model with its adapter
answers prompts (greedy decoding, so answers repeat). A plain question is written as the run's training
rows were (runner.training.prompts: their prompt template, or the chat template); --raw sends it as given.
--compare-base also answers with the base model alone, to show what the fine-tune changed.

An `hf` run generates with transformers + peft here; an `mlx` run with mlx-lm, in the `mlx` stack's
environment when this one has no MLX (as `lockstep train` does).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from runner import rundir
from runner.errors import DataError, run_command
from runner.util import console


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", type=Path, help="a finished run directory")
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", action="append", help="a prompt (repeatable): a plain question, written as the run's data "
                                                        "wrote its prompts (see --raw)")
    given.add_argument("--file", type=Path, help="prompts: a JSONL file (each row's prompt, text, or messages' first user turn) "
                                                  "or a text file (one prompt per line)")
    parser.add_argument("--raw", action="store_true",
                        help="send each prompt exactly as given, in no template (by default a plain question is written "
                             "as the run's training rows were: their prompt template, or the chat template)")
    parser.add_argument("--compare-base", action="store_true",
                        help="answer with the base model alone too, beside the fine-tuned answer")
    parser.add_argument("--max-new-tokens", type=_new_token_count, default=64, metavar="N",
                        help="the most tokens each answer may have (default: 64)")


def generate(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    engine = rundir.require_finished(run_dir)["engine"]
    prompts = args.prompt or read_prompts(args.file)
    if engine == "mlx" and importlib.util.find_spec("mlx") is None:
        return _in_mlx_environment(args)
    from runner import config as config_module
    from runner.training import prompts as prompt_format

    config = config_module.load(str(run_dir / rundir.CONFIG_FILE), [])
    style = prompt_format.style(config, raw=args.raw)
    console.say(style.note)
    written = [style.apply(prompt) for prompt in prompts]
    if engine == "mlx":
        from runner.engines import mlx_inference

        answers = mlx_inference.answer(run_dir, config, style.fmt, written, args.max_new_tokens)
        base = mlx_inference.answer(run_dir, config, style.fmt, written, args.max_new_tokens, adapter=False) if args.compare_base else None
    else:
        from runner.use import inference

        model, tokenizer = inference.load(run_dir)
        ids = [prompt_format.prompt_ids(tokenizer, style.fmt, p) for p in written]
        answers = [inference.generate(model, tokenizer, prompt, args.max_new_tokens) for prompt in ids]
        base = None
        if args.compare_base:
            with model.disable_adapter():  # the same weights, the LoRA layers bypassed
                base = [inference.generate(model, tokenizer, prompt, args.max_new_tokens) for prompt in ids]
    _print_answers(prompts, answers, base)
    return 0


def _print_answers(prompts: list[str], answers: list[str], base: list[str] | None) -> None:
    """One prompt: its answer (and the base model's, labelled); several: a JSON line each."""
    if len(prompts) == 1:
        print(answers[0] if base is None else f"base model: {base[0]}\nfine-tuned: {answers[0]}")
        return
    for index, (prompt, answer) in enumerate(zip(prompts, answers)):
        row = {"prompt": prompt, "completion": answer} | ({"base_completion": base[index]} if base is not None else {})
        print(json.dumps(row, ensure_ascii=False))


def read_prompts(file: Path) -> list[str]:
    try:
        lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise DataError(f"cannot read the prompts file {file}: {exc.strerror}") from exc
    if file.suffix != ".jsonl":
        return lines
    prompts = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            prompts.append(row["prompt"] if "prompt" in row else row["text"] if "text" in row else
                           next(m["content"] for m in row["messages"] if m["role"] == "user"))
        except (ValueError, KeyError, TypeError, StopIteration) as exc:
            raise DataError(f"{file}:{number}: expected a JSON object with 'prompt', 'text' or a user message ({type(exc).__name__})") from exc
    if not prompts:
        raise DataError(f"{file}: no prompts in it")
    return prompts


def _in_mlx_environment(args: argparse.Namespace) -> int:
    from runner import stacks
    from runner.stacks import venv as stack_venv
    from runner.util import foreground

    python = stack_venv.ensure(stacks.get("mlx"))
    argv = [str(args.run_dir), "--max-new-tokens", str(args.max_new_tokens), *(["--raw"] if args.raw else []),
            *(["--compare-base"] if args.compare_base else [])]
    argv += [f"--prompt={p}" for p in args.prompt] if args.prompt else ["--file", str(args.file)]
    return foreground.run([str(python), "-m", "runner.use.generate", *argv], env=stack_venv.job_environment())


def _new_token_count(text: str) -> int:
    """--max-new-tokens: a whole number of at least 1 (refused by argparse, exit 2, before any model loads)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1 (the most tokens an answer may have), got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.use.generate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: generate(args))


if __name__ == "__main__":
    sys.exit(main())
