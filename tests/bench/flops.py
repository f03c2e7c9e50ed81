"""Parameter and FLOP counts of Llama-style decoders, and model FLOPs utilisation (MFU), for the GPU benchmarks.

Training FLOPs per token, counting matrix multiplications only (2 FLOPs per multiply-add), for a
LoRA fine-tune whose base weights are frozen:

    forward                   2 * (N + N_lora)
    backward, input grads     2 * (N + N_lora)   (the gradient flows through every layer)
    backward, weight grads    2 * N_trainable    (the adapters only; N for full fine-tuning)
    attention (QK^T, AV)      12 * layers * seq_len * heads * head_dim   (forward + backward, PaLM's convention:
                              no discount for the causal mask)

    flops_per_token = 4 * (N + N_lora) + 2 * N_trainable + 12 * L * s * H * d_head

N counts the weights of every matrix multiplication: the decoder layers' projections and the
output layer (a tied output layer still multiplies), not the embedding lookup or the norms.
With N_lora = 0 and N_trainable = N this is the familiar 6 * N + 12 * L * s * H * d_head of full
training. Recomputation (gradient checkpointing) is not counted: this is MFU, not hardware FLOPs
utilisation. QLoRA does the same multiplications (4-bit weights are dequantised to bf16 first).

    MFU = tokens_per_s * flops_per_token / peak dense bf16 FLOP/s of the device
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, in TFLOP/s, by a
# fragment of torch.cuda.get_device_name(); the first fragment found in the name wins.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0),
    ("H200 NVL", 835.0),
    ("H200", 989.0),  # SXM
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("T4", 65.0),  # fp16: the T4 has no bf16
)
PEAK_ENV = "LOCKSTEP_PEAK_TFLOPS"  # overrides the table (another device, other clocks)


@dataclass(frozen=True, kw_only=True)
class Shape:
    """The sizes of a Llama-style decoder (grouped-query attention, SwiGLU MLP)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    head_dim: int | None = None  # hidden // heads unless set
    tie_word_embeddings: bool = False

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each projection of one decoder layer."""
        q, kv = self.heads * self.d_head, self.kv_heads * self.d_head
        return {
            "q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv), "o_proj": (q, self.hidden),
            "gate_proj": (self.hidden, self.intermediate), "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }

    def llama_config(self, **extra: Any) -> dict[str, Any]:
        """Keyword arguments for transformers' LlamaConfig."""
        return {"hidden_size": self.hidden, "intermediate_size": self.intermediate, "num_hidden_layers": self.layers,
                "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads, "vocab_size": self.vocab,
                "head_dim": self.d_head, "tie_word_embeddings": self.tie_word_embeddings, **extra}


# The published architectures (their config.json), with random weights in the benchmarks.
LLAMA_3_2_1B = Shape(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, vocab=128256, head_dim=64, tie_word_embeddings=True)
LLAMA_3_1_8B = Shape(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256, head_dim=128)


def matmul_params(shape: Shape) -> int:
    """Weights that take part in a matrix multiplication per token: every layer's projections and the output layer."""
    per_layer = sum(inp * out for inp, out in shape.linears().values())
    return shape.layers * per_layer + shape.vocab * shape.hidden


def total_params(shape: Shape) -> int:
    """Every parameter of the model, as `sum(p.numel() for p in model.parameters())` counts it (no biases)."""
    embeddings = shape.vocab * shape.hidden * (1 if shape.tie_word_embeddings else 2)
    norms = shape.layers * 2 * shape.hidden + shape.hidden
    return shape.layers * sum(inp * out for inp, out in shape.linears().values()) + embeddings + norms


def lora_params(shape: Shape, r: int) -> int:
    """Parameters of LoRA adapters of rank `r` on every projection of every layer (peft's `all-linear`,
    which leaves the output layer out): r * (in + out) each."""
    return shape.layers * sum(r * (inp + out) for inp, out in shape.linears().values())


def train_flops_per_token(shape: Shape, seq_len: int, *, lora_r: int | None) -> float:
    """FLOPs of one training token (the module docstring's formula); lora_r None means full fine-tuning."""
    n = matmul_params(shape)
    adapters = lora_params(shape, lora_r) if lora_r else 0
    trainable = adapters if lora_r else n
    attention = 12 * shape.layers * seq_len * shape.heads * shape.d_head
    return 4 * (n + adapters) + 2 * trainable + attention


def peak_flops(device_name: str) -> float | None:
    """The device's dense bf16 peak in FLOP/s (LOCKSTEP_PEAK_TFLOPS wins), or None if unknown."""
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV]) * 1e12
    for fragment, tflops in PEAK_BF16_TFLOPS:
        if fragment in device_name:
            return tflops * 1e12
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's peak (None without a known peak)."""
    if not peak:
        return None
    return tokens_per_s * flops_per_token / peak
