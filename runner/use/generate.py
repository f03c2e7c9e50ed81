"""`lockstep generate RUN --prompt TEXT | --file FILE`: the finished run's base model with its adapter
answers prompts given in the run's data format (greedy decoding, so answers repeat).

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", type=Path, help="a finished run directory")
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", action="append", help="a prompt (repeatable); written as the run's data wrote its prompts")
    given.add_argument("--file", type=Path, help="prompts: a JSONL file (each row's prompt, text, or messages' first user turn) "
                                                  "or a text file (one prompt per line)")
    parser.add_argument("--max-new-tokens", type=int, default=64)


def generate(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    engine = rundir.require_finished(run_dir)["engine"]
    prompts = args.prompt or read_prompts(args.file)
    if engine == "mlx" and importlib.util.find_spec("mlx") is None:
        return _in_mlx_environment(args)
    from runner import config as config_module
    from runner.training import prompts as prompt_format

    config = config_module.load(str(run_dir / rundir.CONFIG_FILE), [])
    fmt = prompt_format.run_format(config)
    if engine == "mlx":
        from runner.engines import mlx_inference

        answers = mlx_inference.answer(run_dir, config, fmt, prompts, args.max_new_tokens)
    else:
        from runner.use import inference

        model, tokenizer = inference.load(run_dir)
        answers = [inference.generate(model, tokenizer, prompt_format.prompt_ids(tokenizer, fmt, p), args.max_new_tokens) for p in prompts]
    if len(prompts) == 1:
        print(answers[0])
    else:
        for prompt, answer in zip(prompts, answers):
            print(json.dumps({"prompt": prompt, "completion": answer}, ensure_ascii=False))
    return 0


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
    argv = [str(args.run_dir), "--max-new-tokens", str(args.max_new_tokens)]
    argv += [f"--prompt={p}" for p in args.prompt] if args.prompt else ["--file", str(args.file)]
    return foreground.run([str(python), "-m", "runner.use.generate", *argv], env=stack_venv.job_environment())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.use.generate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: generate(args))


if __name__ == "__main__":
    sys.exit(main())
