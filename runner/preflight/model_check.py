"""Preflight's model check: the model's config loads, its size comes from that config alone (no
weights downloaded), and its weights are reachable (built in, on disk, or on the Hugging Face hub).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.config import BUILTIN_PREFIX, RunConfig
from runner.errors import ModelError
from runner.models import from_gguf, gguf, resolve_model
from runner.preflight.memory import ModelShape
from runner.problems import Check

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    config: dict[str, Any] | None  # the model's config.json
    shape: ModelShape | None  # None when the architecture's keys are not Llama-style
    weights_bytes: int | None  # the checkpoint files' size, where known
    to_download: bool = False  # weights not in the local cache yet
    prequantized: str | None = None  # "4bit" or "8bit" for a checkpoint saved quantized (bitsandbytes)
    details: dict[str, Any] = field(default_factory=dict)


def inspect(config: RunConfig) -> tuple[list[Check], ModelInfo]:
    name = config.model.name_or_path
    try:
        if from_gguf(name, config.model.gguf_file):
            info = _converted(name, config.model.gguf_file)
        elif name.startswith(BUILTIN_PREFIX):
            info = _builtin(name)
        elif Path(name).expanduser().is_dir():
            info = _local(Path(name).expanduser())
        else:
            info = _hub(name, config.model.revision)
    except ModelUnreachable as exc:
        return [Check(name="model", status="error", summary=f"{name}: {exc.what}", fix=exc.fix)], ModelInfo(config=None, shape=None, weights_bytes=None)
    checks = [Check(name="model", status="ok", summary=_describe(name, info))]
    positions = (info.config or {}).get("max_position_embeddings")
    if isinstance(positions, int) and config.train.max_seq_len > positions:
        checks.append(Check(name="model.context", status="warning",
                            summary=f"train.max_seq_len {config.train.max_seq_len} exceeds the {positions} positions {name} was trained on",
                            fix=f"set train.max_seq_len to at most {positions}, unless the model is meant to be extended (RoPE scaling)"))
    if info.shape is None:
        checks.append(Check(name="model.shape", status="warning",
                            summary=f"{name}: config.json does not use Llama-style keys (hidden_size, num_hidden_layers...); memory is not estimated",
                            fix="pass the memory you expect with care; the memory check and the recommendation are skipped"))
    return checks, info


class ModelUnreachable(Exception):
    def __init__(self, what: str, fix: str) -> None:
        super().__init__(what)
        self.what, self.fix = what, fix


def _describe(name: str, info: ModelInfo) -> str:
    parts = []
    if info.shape is not None:
        parts.append(f"{info.shape.parameters() / 1e9:.3g}B parameters ({info.shape.layers} layers, hidden {info.shape.hidden}, vocab {info.shape.vocab})"
                     if info.shape.parameters() >= 1e8 else f"{info.shape.parameters() / 1e6:.3g}M parameters")
    if info.weights_bytes:
        parts.append(f"weights {info.weights_bytes / 2**30:.2f} GiB" + (" to download" if info.to_download else ""))
    if info.prequantized:
        parts.append(f"saved {info.prequantized}")
    where = info.details.get("where", "")
    return f"{name}: " + ", ".join(parts) + (f" ({where})" if where else "")


def _info(config: dict[str, Any], weights_bytes: int | None, **kwargs: Any) -> ModelInfo:
    try:
        shape = ModelShape.from_config(config)
    except (KeyError, TypeError, ValueError):
        shape = None
    quant = config.get("quantization_config") or {}
    prequantized = "4bit" if quant.get("load_in_4bit") else ("8bit" if quant.get("load_in_8bit") else None)
    return ModelInfo(config=config, shape=shape, weights_bytes=weights_bytes, prequantized=prequantized, **kwargs)


def _builtin(name: str) -> ModelInfo:
    from runner.demo import tiny_model  # config.load has checked that the built-in model exists

    config = json.loads(tiny_model.model_config(name[len(BUILTIN_PREFIX):]).read_text())
    return _info(config, None, details={"where": "built in, made locally on first use"})


def _converted(name: str, gguf_file: str | None) -> ModelInfo:
    """A model made from a GGUF file: fetched and converted now if the cache has none (training would do the same)."""
    try:
        path = Path(resolve_model(name, gguf_file))
    except ModelError as exc:  # its message names the file; the check's line names the model already
        raise ModelUnreachable(str(exc).removeprefix(f"{name}: "), "point model.name_or_path (and model.gguf_file) at a whole "
                               "GGUF file of an architecture transformers loads, or at a Hugging Face directory") from exc
    source = json.loads((path / gguf.SOURCE_FILE).read_text())
    where = f"from {source['gguf_file']} ({source['architecture']}, {source['quantization']}), converted into {path}"
    return dataclasses.replace(_local(path), details={"where": where})


def _local(path: Path) -> ModelInfo:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelUnreachable(f"no config.json in {path}", "point model.name_or_path at a directory saved with save_pretrained()")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as exc:
        raise ModelUnreachable(f"{config_file} is not valid JSON ({exc})", "restore the file from the model's source") from exc
    weights = [file for file in path.iterdir() if file.suffix in WEIGHT_SUFFIXES and file.is_file()]
    if not weights:
        raise ModelUnreachable(f"no weights in {path} (no {', '.join('*' + s for s in WEIGHT_SUFFIXES)} file)",
                               "copy the model's weight files next to its config.json")
    return _info(config, sum(file.stat().st_size for file in weights), details={"where": f"local directory, {len(weights)} weight file(s)"})


def _hub(repo: str, revision: str | None) -> ModelInfo:
    try:
        import huggingface_hub
        from huggingface_hub import errors
    except ImportError as exc:
        raise ModelUnreachable("huggingface_hub is not installed here, so the hub cannot be asked",
                               "install the hf extra (pip install 'lockstep[hf]') or run preflight in the stack's environment") from exc
    try:
        config_path = huggingface_hub.hf_hub_download(repo, "config.json", revision=revision)
    except errors.GatedRepoError as exc:
        raise ModelUnreachable("gated on the hub: this account has not been granted access",
                               f"accept the model's license at https://huggingface.co/{repo} and set HF_TOKEN (or `hf auth login`)") from exc
    except errors.RepositoryNotFoundError as exc:
        raise ModelUnreachable("no such model on the hub (or it is private)",
                               "check model.name_or_path; for a private model set HF_TOKEN; a local model needs a path starting with ./ or /") from exc
    except errors.RevisionNotFoundError as exc:
        raise ModelUnreachable(f"the hub has no revision {revision!r}", "check model.revision (a branch, tag or commit)") from exc
    except (errors.LocalEntryNotFoundError, OSError) as exc:
        raise ModelUnreachable(f"the hub cannot be reached and the model is not in the local cache ({type(exc).__name__})",
                               "check the network (or HF_ENDPOINT), or download the model once where the hub is reachable") from exc
    except Exception as exc:  # an HTTP error of the hub's, whose classes change between huggingface_hub releases
        raise ModelUnreachable(f"the hub answered with an error: {type(exc).__name__}: {exc}",
                               "check model.name_or_path and model.revision, then try again") from exc
    config = json.loads(Path(config_path).read_text())
    weights_bytes, to_download, where = _hub_weights(huggingface_hub, repo, revision)
    return _info(config, weights_bytes, to_download=to_download, details={"where": where})


def _hub_weights(hub: Any, repo: str, revision: str | None) -> tuple[int | None, bool, str]:
    """The weight files' total size and whether they still have to be downloaded; (None, ...) offline."""
    try:
        files = hub.HfApi().model_info(repo, revision=revision, files_metadata=True).siblings or []
    except Exception:  # offline, rate-limited...: the config came from the cache, which is enough to go on
        return None, False, "hub not reachable now; config from the local cache"
    weights = [file for file in files if file.rfilename.endswith(WEIGHT_SUFFIXES) and "/" not in file.rfilename]
    safetensors = [file for file in weights if file.rfilename.endswith(".safetensors")]
    chosen = safetensors or weights  # transformers prefers safetensors when both are there
    if not chosen:
        raise ModelUnreachable("the hub repository has no weight files at its top level", "check model.name_or_path")
    cached = all(isinstance(hub.try_to_load_from_cache(repo, file.rfilename, revision=revision), str) for file in chosen)  # a path when cached
    return sum(file.size or 0 for file in chosen), not cached, "on the hub" + (", in the local cache" if cached else "")


def load_tokenizer(config: RunConfig) -> Any:
    """The run's tokenizer (for token lengths), exactly as training loads it; raises on failure."""
    from runner.models import load_tokenizer as engine_tokenizer

    return engine_tokenizer(resolve_model(config.model.name_or_path, config.model.gguf_file), config)
