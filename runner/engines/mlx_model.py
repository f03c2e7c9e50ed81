"""The MLX engine's model: loading (precision, 4-bit), LoRA layers from the config, and the adapter
written in mlx-lm's format and exported in PEFT's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from runner.config import RunConfig
from runner.errors import EngineError
from runner.models import load_tokenizer, resolve_model

ADAPTER_WEIGHTS = "adapters.safetensors"  # the names mlx-lm's load(adapter_path=...) reads
ADAPTER_CONFIG = "adapter_config.json"
QUANT_GROUP = 64  # mlx-lm's default group size for 4-bit weights
DTYPES = {"fp32": mx.float32, "bf16": mx.bfloat16, "fp16": mx.float16}


def resolve_precision(requested: str) -> str:
    """`auto`: bf16 on Apple's GPU, fp32 on the CPU (MLX's CPU back end is slow in half precision)."""
    if requested != "auto":
        return requested
    return "bf16" if mx.default_device() == mx.gpu else "fp32"


def load(config: RunConfig, precision: str) -> tuple[Any, Any, Path]:
    """The base model (frozen, in `precision`, quantized if asked), its tokenizer and its local directory.

    The tokenizer is the one the hf engine and preflight load, so the tokens trained on are the same."""
    from mlx_lm.utils import _download, load_model

    path = Path(_download(resolve_model(config.model.name_or_path, config.model.gguf_file), revision=config.model.revision))
    model, _ = load_model(path, trust_remote_code=config.model.trust_remote_code)
    tokenizer = load_tokenizer(str(path), config)
    model.set_dtype(DTYPES[precision])
    if config.quantization == "4bit":
        # Decoder layers only, as QLoRA does; a matrix whose input width the group size does not divide stays as it is.
        for layer in model.layers:
            nn.quantize(layer, group_size=QUANT_GROUP, bits=4,
                        class_predicate=lambda _, module: isinstance(module, nn.Linear) and module.weight.shape[-1] % QUANT_GROUP == 0)
    model.freeze()
    return model, tokenizer, path


def lora_settings(config: RunConfig, model: Any) -> dict[str, Any]:
    """mlx-lm's LoRA parameters for the config: its `scale` is PEFT's alpha / r."""
    keys = target_keys(model, config.lora.target_modules)
    if not keys:
        names = sorted({name.rsplit(".", 1)[-1] for name in target_keys(model, ("all-linear",))})
        raise EngineError(f"lora.target_modules {list(config.lora.target_modules)} names no linear layer of this model; "
                          f"its layers have {', '.join(names)} (or use all-linear)")
    return {"rank": config.lora.r, "scale": config.lora.alpha / config.lora.r, "dropout": config.lora.dropout, "keys": keys}


def target_keys(model: Any, targets: tuple[str, ...]) -> list[str]:
    """The linear layers of a decoder layer that get adapters: every one for `all-linear` (as PEFT,
    the output layer is not in a decoder layer), else those whose name ends with a listed name."""
    linear = [name for name, module in model.layers[0].named_modules() if isinstance(module, (nn.Linear, nn.QuantizedLinear))]
    if targets == ("all-linear",):
        return sorted(linear)
    return sorted(name for name in linear if any(name == t or name.endswith("." + t) for t in targets))


def add_lora(model: Any, settings: dict[str, Any]) -> None:
    from mlx_lm.tuner.utils import linear_to_lora_layers

    linear_to_lora_layers(model, len(model.layers), settings)


def quantized_layers(model: Any) -> int:
    return sum(isinstance(module, nn.QuantizedLinear) for _, module in model.named_modules())


def adapter_weights(model: Any) -> dict[str, Any]:
    return dict(tree_flatten(model.trainable_parameters()))


def write_adapter(model: Any, settings: dict[str, Any], out: Path, *, base: str) -> None:
    """The adapter in mlx-lm's format: `mlx_lm.load(base, adapter_path=out)` applies it."""
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / ADAPTER_WEIGHTS), adapter_weights(model))
    described = {"fine_tune_type": "lora", "num_layers": len(model.layers), "lora_parameters": settings, "model": base}
    (out / ADAPTER_CONFIG).write_text(json.dumps(described, indent=2) + "\n")


def peft_export_problem(model: Any, model_dir: Path) -> str | None:
    """Why the adapter cannot be exported in PEFT's format (the model's module names are not transformers'), or None."""
    base_names = _weight_names(model_dir)
    for name in adapter_weights(model):
        prefix = name.rsplit(".", 1)[0]
        if f"{prefix}.weight" not in base_names:
            return f"{prefix} has no counterpart among the weights of {model_dir.name}"
    return None


def export_peft(model: Any, config: RunConfig, out: Path) -> None:
    """The adapter as PEFT writes it, for transformers + peft (where peft_export_problem() finds none)."""
    from safetensors.numpy import save_file

    tensors, modules = {}, set()
    for name, value in adapter_weights(model).items():
        prefix, leaf = name.rsplit(".", 1)
        # mlx-lm computes x @ A @ B; PEFT computes B(A(x)) with (out, in) matrices: the transposes.
        tensors[f"base_model.model.{prefix}.lora_{leaf[-1].upper()}.weight"] = np.array(value.astype(mx.float32)).T.copy()
        modules.add(prefix.rsplit(".", 1)[-1])
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    described = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": config.model.name_or_path,
        "revision": config.model.revision, "r": config.lora.r, "lora_alpha": config.lora.alpha, "lora_dropout": config.lora.dropout,
        "target_modules": sorted(modules), "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
    }
    (out / ADAPTER_CONFIG).write_text(json.dumps(described, indent=2) + "\n")


def _weight_names(model_dir: Path) -> set[str]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    names: set[str] = set()
    for file in model_dir.glob("*.safetensors"):
        names.update(mx.load(str(file)).keys())
    return names
