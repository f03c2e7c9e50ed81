"""Where a run's model comes from and how its tokenizer loads: shared by the engines, preflight and the
commands that use a finished run, so every stack loads and tokenizes the same model. Free of torch and MLX
(a GGUF file's conversion imports transformers when it runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.config import BUILTIN_PREFIX, RunConfig
from runner.demo.tiny_model import ensure_built
from runner.models import catalog, gguf, pinned
from runner.util import cache


def resolve_model(name_or_path: str, gguf_file: str | None = None) -> str:
    """The directory (or hub id) the engines load: a hub id or local directory as it is; a built-in model's
    directory, built or fetched on first use; a GGUF file's converted directory, converted on first use."""
    if name_or_path.startswith(BUILTIN_PREFIX):
        return str(_builtin(name_or_path[len(BUILTIN_PREFIX) :]))
    if gguf_file is not None:
        return str(gguf.converted(Path(name_or_path).expanduser() / gguf_file))
    if gguf.is_gguf(name_or_path):
        return str(gguf.converted(Path(name_or_path).expanduser()))
    return name_or_path


def from_gguf(name_or_path: str, gguf_file: str | None = None) -> bool:
    """Whether the model is made from a GGUF file (a fetched built-in one, a .gguf path, a directory and its file)."""
    if name_or_path.startswith(BUILTIN_PREFIX):
        return name_or_path[len(BUILTIN_PREFIX) :] in catalog.FETCHED
    return gguf_file is not None or gguf.is_gguf(name_or_path)


def fetched_file(name: str) -> Path | None:
    """The GGUF file of the fetched built-in model `name` (downloaded first if need be); None for a built one."""
    if name not in catalog.FETCHED:
        return None
    return pinned.fetch(catalog.FETCHED[name], cache.root() / "downloads")


def _builtin(name: str) -> Path:
    if (file := fetched_file(name)) is not None:
        return gguf.converted(file, sha256=catalog.FETCHED[name].final_sha256)
    return ensure_built(name)


def load_tokenizer(model_path: str, config: RunConfig) -> Any:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(
        model_path, revision=config.model.revision, trust_remote_code=config.model.trust_remote_code
    )
    if tokenizer.pad_token is None:  # common for Llama-family tokenizers; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
