"""Answers from an `mlx` run: its base model with the adapter in mlx-lm's format (or without it), greedy decoding."""

from __future__ import annotations

from pathlib import Path

from runner.config import RunConfig


def answer(run_dir: Path, config: RunConfig, fmt: str, prompts: list[str], max_new_tokens: int,
           adapter: bool = True) -> list[str]:
    import mlx_lm

    from runner.models import load_tokenizer, resolve_model
    from runner.rundir import ADAPTER_DIR
    from runner.training import prompts as prompt_format

    base = resolve_model(config.model.name_or_path, config.model.gguf_file)
    model, wrapper = mlx_lm.load(base, adapter_path=str(run_dir / ADAPTER_DIR) if adapter else None, revision=config.model.revision,
                                 trust_remote_code=config.model.trust_remote_code)
    tokenizer = load_tokenizer(base, config)  # the tokenizer training used, for the prompt's exact tokens
    return [mlx_lm.generate(model, wrapper, prompt_format.prompt_ids(tokenizer, fmt, p), max_tokens=max_new_tokens) for p in prompts]
