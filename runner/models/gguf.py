"""GGUF model files (llama.cpp's format) as training input: read their header, and convert them once into a
Hugging Face directory that every engine loads like any other (safetensors weights, config, tokenizer with its
chat template).

transformers reads the file and dequantizes every tensor; the weights are kept in float32, which holds every
dequantized value exactly, and the engine casts them to the run's precision when it loads them, as it does for
any float32 checkpoint. The directory is cached under the file's sha256 and written atomically, so a file is
converted once per machine and a conversion that fails or is interrupted leaves nothing."""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import ModelError
from runner.util import cache, console
from runner.util.files import build_once
from runner.util.hashing import file_sha256

CONVERSION_VERSION = "1"  # bump when the converted directory's content changes
SOURCE_FILE = "lockstep-gguf.json"  # in the converted directory: what it was made from; written last


@dataclass(frozen=True, kw_only=True)
class GgufSummary:
    architecture: str  # general.architecture, e.g. "llama"
    name: str | None  # general.name, where the file has one
    parameters: int
    quantization: str  # the tensor types, most parameters first: "Q4_1 (also Q8_0, F32)"


def is_gguf(path: str) -> bool:
    return path.lower().endswith(".gguf")


def summary(path: Path) -> GgufSummary:
    """What the file's header says; raises ModelError for a file that is not a whole GGUF file."""
    reader = _reader(path)
    fields = {name: _field_value(field) for name, field in reader.fields.items() if name.startswith("general.")}
    by_type: Counter[str] = Counter()
    for tensor in reader.tensors:
        by_type[tensor.tensor_type.name] += int(tensor.n_elements)
    kinds = [name for name, _ in by_type.most_common()]
    quantization = kinds[0] + (f" (also {', '.join(kinds[1:])})" if len(kinds) > 1 else "") if kinds else "no tensors"
    return GgufSummary(architecture=str(fields.get("general.architecture", "unknown")), name=fields.get("general.name"),
                       parameters=sum(by_type.values()), quantization=quantization)


def converted(path: Path, sha256: str | None = None) -> Path:
    """The Hugging Face directory made from the GGUF file `path`, converting it first if the cache has none.

    `sha256`: the file's, when it is already known (a pinned file); otherwise the file is hashed."""
    if not path.is_file():
        raise ModelError(f"{path}: no such GGUF file; check model.name_or_path (and model.gguf_file)")
    key = sha256 or _sha256(str(path.resolve()), *_identity(path))
    target = cache_dir() / f"gguf-{key[:16]}-v{CONVERSION_VERSION}"
    if (target / SOURCE_FILE).is_file():
        return target
    described = summary(path)
    console.say(f"converting {path.name} ({described.architecture}, {described.parameters / 1e6:.1f}M parameters, "
                f"{described.quantization}) to a Hugging Face directory, once: {target}")
    return build_once(target, lambda staging: _convert(path, staging, key, described), complete=SOURCE_FILE)


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, once per process while its size and time stay (preflight and training each resolve the
    model, and a GGUF file may be gigabytes)."""
    return file_sha256(Path(path))


def cache_dir() -> Path:
    return cache.root() / "models"


def _convert(path: Path, out: Path, sha256: str, described: GgufSummary) -> None:
    try:
        import torch
        import transformers
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError as exc:
        raise ModelError(f"converting {path.name} needs torch, transformers and gguf, which this environment lacks ({exc}); "
                         "run `lockstep preflight CONFIG` from the cpu stack once: the converted model is cached for every stack") from exc
    if described.architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ModelError(f"{path}: transformers {transformers.__version__} cannot load GGUF files of architecture "
                         f"{described.architecture!r} (it loads {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}); "
                         "use the model's Hugging Face checkpoint instead, or a GGUF file of a supported architecture")
    folder, name = str(path.parent), path.name
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **_float32(transformers, torch))
    except (ValueError, KeyError, OSError) as exc:
        raise ModelError(f"{path}: transformers cannot load this GGUF file: {exc}") from exc
    _detach_quantizer(model)
    config = model.config
    tokenizer.model_max_length = config.max_position_embeddings  # GGUF tokenizers come without one (a huge default)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _add_legacy_rope_theta(out / "config.json")
    _portable_tokenizer_config(out)
    source = {"gguf_file": name, "sha256": sha256, "architecture": described.architecture, "parameters": described.parameters,
              "quantization": described.quantization, "converted_by": f"transformers {transformers.__version__}",
              "conversion": CONVERSION_VERSION}
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")


def _float32(transformers: Any, torch: Any) -> dict[str, Any]:
    """transformers 5 renamed from_pretrained's `torch_dtype` to `dtype`."""
    return {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": torch.float32}


def _detach_quantizer(model: Any) -> None:
    """transformers keeps the GGUF quantizer on the loaded model and then refuses to save it, although every
    weight is already dequantized: the model saved without it is a plain checkpoint."""
    model.hf_quantizer = None
    for holder in (model, model.config):
        if hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    model.is_quantized = False


def _add_legacy_rope_theta(config_file: Path) -> None:
    """transformers 5 writes RoPE's base under rope_parameters; transformers 4 and mlx-lm read rope_theta, and
    without it silently use 10000. Both keys, so every stack reads the same model from the one cache."""
    config = json.loads(config_file.read_text())
    theta = (config.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None and "rope_theta" not in config:
        config["rope_theta"] = theta
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _portable_tokenizer_config(directory: Path) -> None:
    """transformers 5 names its own tokenizer class and keeps the chat template in chat_template.jinja, neither of
    which transformers 4 reads: the generic fast tokenizer's class and the template inline load the same tokenizer
    (the same token ids) in both."""
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    template = directory / "chat_template.jinja"
    if template.is_file() and "chat_template" not in config:
        config["chat_template"] = template.read_text()
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _reader(path: Path) -> Any:
    try:
        import gguf
    except ImportError as exc:
        raise ModelError(f"reading {path.name} needs the gguf package, which this environment lacks; "
                         "run lockstep from the cpu stack (it has gguf) or `pip install gguf`") from exc
    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError, OSError) as exc:
        size = path.stat().st_size if path.exists() else 0
        if "magic" in str(exc).lower():
            raise ModelError(f"{path}: not a GGUF file (it does not start with GGUF's magic bytes); "
                             "check model.name_or_path and model.gguf_file") from exc
        raise ModelError(f"{path}: not a complete GGUF file ({size} bytes; reading it failed with: {exc}); "
                         "it was probably cut short in a download or copy: fetch it again") from exc


def _field_value(field: Any) -> Any:
    """A GGUF header field as a Python value (strings come as byte arrays)."""
    if not field.data:
        return None
    part = field.parts[field.data[0]]
    if part.dtype.kind == "u" and part.dtype.itemsize == 1:
        return bytes(part).decode("utf-8", errors="replace")
    return part.tolist()[0] if len(part) == 1 else part.tolist()
