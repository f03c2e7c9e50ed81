"""Where a run's model comes from and how its tokenizer loads: shared by the engines and preflight,
and free of torch and MLX, so every stack tokenizes a run's data the same way."""

from __future__ import annotations

from typing import Any

from runner.config import BUILTIN_PREFIX, RunConfig


def resolve_model(name_or_path: str) -> str:
    """A hub id or local directory as it is; a built-in model's directory, built on first use."""
    if name_or_path.startswith(BUILTIN_PREFIX):
        from runner.demo.tiny_model import ensure_built

        return str(ensure_built(name_or_path[len(BUILTIN_PREFIX) :]))
    return name_or_path


def load_tokenizer(model_path: str, config: RunConfig) -> Any:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(
        model_path, revision=config.model.revision, trust_remote_code=config.model.trust_remote_code
    )
    if tokenizer.pad_token is None:  # common for Llama-family tokenizers; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
