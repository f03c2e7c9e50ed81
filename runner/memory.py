"""Training memory of a LoRA fine-tune, estimated from the model's shape alone (its config.json, no weights).

The parts: frozen weights (full, 8-bit or 4-bit), LoRA weights, their gradients and AdamW's two
states, the activations kept for the backward pass (all of them, or one tensor per layer with
gradient checkpointing), and the logits, which the loss upcasts to fp32 and which dominate for
large vocabularies. Pure arithmetic: preflight compares it with a device's memory, and the tests
compare it with measured peaks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GIB = 2**30
WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "8bit": 1.0, "4bit": 0.5 + 0.5 / 64 * 1.25}  # nf4 + double-quant constants
LINEARS_PER_LAYER = 7  # q, k, v, o, gate, up, down: what "all-linear" LoRA adapts in a Llama layer


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """From a Llama-style config.json (Mistral, Qwen2 and most decoder-only models use these names)."""
        heads = int(config["num_attention_heads"])
        return cls(hidden=int(config["hidden_size"]), intermediate=int(config["intermediate_size"]),
                   layers=int(config["num_hidden_layers"]), heads=heads, kv_heads=int(config.get("num_key_value_heads") or heads),
                   vocab=int(config["vocab_size"]), tied_embeddings=bool(config.get("tie_word_embeddings", False)))

    @property
    def kv_width(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer in one decoder layer."""
        h, i, kv = self.hidden, self.intermediate, self.kv_width
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    def layer_parameters(self) -> int:
        return sum(n_in * n_out for n_in, n_out in self.linear_shapes()) + 2 * self.hidden  # + two RMSNorms

    def embedding_parameters(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def parameters(self) -> int:
        return self.layers * self.layer_parameters() + self.embedding_parameters() + self.hidden  # + the final norm

    def lora_parameters(self, rank: int) -> int:
        return self.layers * sum(rank * (n_in + n_out) for n_in, n_out in self.linear_shapes())


@dataclass(frozen=True, kw_only=True)
class Estimate:
    weights: float  # bytes, each part
    lora: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    overhead: float  # the runtime itself: a CUDA context, or the process's libraries on CPU

    @property
    def total(self) -> float:
        return self.weights + self.lora + self.gradients + self.optimizer + self.activations + self.logits + self.overhead

    def as_gib(self) -> dict[str, float]:
        parts = ("weights", "lora", "gradients", "optimizer", "activations", "logits", "overhead")
        return {name: round(getattr(self, name) / GIB, 3) for name in parts} | {"total": round(self.total / GIB, 3)}


def estimate(shape: ModelShape, *, weights: str, compute_bytes: int, lora_rank: int, batch: int, seq_len: int,
             gradient_checkpointing: bool, overhead_bytes: float) -> Estimate:
    """`weights`: fp32, bf16, fp16, 8bit or 4bit; `compute_bytes`: 4 for fp32 training, 2 for bf16/fp16."""
    frozen = shape.parameters() - shape.embedding_parameters()
    embedding_bytes = 4.0 if weights == "fp32" else 2.0  # quantization leaves embeddings and the head in 16 bits
    lora = shape.lora_parameters(lora_rank)
    tokens = batch * seq_len
    h, i = shape.hidden, shape.intermediate
    # Kept per token per layer for the backward pass: norms' inputs and outputs, q/k/v (and the
    # rotated q/k), attention output, residuals (~12 h), the MLP's gate, up, activation and product
    # (4 i); attention itself is fused (SDPA), so nothing grows with seq_len squared.
    per_layer = (12 * h + 4 * i) * compute_bytes
    if gradient_checkpointing:  # one input per layer, and one layer's worth recomputed at a time
        activations = tokens * (shape.layers * h * compute_bytes + per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    return Estimate(
        weights=frozen * WEIGHT_BYTES[weights] + shape.embedding_parameters() * embedding_bytes,
        lora=lora * 4.0,  # trainable weights stay fp32 (mixed precision keeps a master copy)
        gradients=lora * 4.0,
        optimizer=lora * 8.0,  # AdamW: two fp32 states
        activations=activations,
        logits=tokens * shape.vocab * 4.0 * 2,  # fp32 logits and their gradient
        overhead=overhead_bytes,
    )
