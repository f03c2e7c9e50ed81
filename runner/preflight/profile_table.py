"""The README's table of recommended settings per hardware profile for two reference LoRA
fine-tunes: `python -m runner.preflight.profile_table` prints it, and a test keeps the README equal to it."""

from __future__ import annotations

from typing import Any

from runner import config as config_module
from runner.preflight import hardware
from runner.preflight.memory import ModelShape
from runner.preflight.recommend import recommend

# config.json values of the reference models (meta-llama/Llama-3.1-8B and Llama-3.2-1B on the hub).
REFERENCE_MODELS: dict[str, dict[str, Any]] = {
    "Llama-3.1-8B": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False},
    "Llama-3.2-1B": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True},
}
# The reference run: LoRA r16 on every linear layer, 2048-token rows, an effective batch of 16.
REFERENCE_RUN = {"lora": {"r": 16}, "train": {"per_device_batch_size": 16, "gradient_accumulation": 1, "max_seq_len": 2048}}


def reference_config(model: str) -> config_module.RunConfig:
    problems: list[str] = []
    raw = {"model": {"name_or_path": f"meta-llama/{model}"}, "data": {"train": "train.jsonl"}, "output_dir": "runs/x", **REFERENCE_RUN}
    config = config_module.from_dict(raw, problems)
    assert config is not None and not problems, problems  # a constant of this module
    return config


def table() -> str:
    lines = ["| hardware | model | batch x accumulation | max_seq_len | gradient checkpointing | weights | estimated / usable |",
             "|---|---|---|---|---|---|---|"]
    for profile in hardware.profile_names():
        target = hardware.profile(profile)
        for model, shape_config in REFERENCE_MODELS.items():
            advice = recommend(reference_config(model), ModelShape.from_config(shape_config), target)
            s = advice.settings
            if not advice.fits:
                lines.append(f"| {profile} | {model} | does not fit | | | | {advice.estimate.total / 2**30:.1f} / {advice.budget_bytes / 2**30:.1f} GiB |")
                continue
            weights = "4-bit" if s.quantization == "4bit" else ("bf16" if target.bf16 else "fp16")
            lines.append(f"| {profile} | {model} | {s.per_device_batch_size} x {s.gradient_accumulation} | {s.max_seq_len} | "
                         f"{'yes' if s.gradient_checkpointing else 'no'} | {weights} | "
                         f"{advice.estimate.total / 2**30:.1f} / {advice.budget_bytes / 2**30:.1f} GiB |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
