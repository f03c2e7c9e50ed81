"""Training memory of a LoRA fine-tune, estimated from the model's shape alone (its config.json, no weights).

The parts: frozen weights (full, 8-bit or 4-bit), LoRA weights, their gradients and AdamW's two
states, the activations autograd keeps for the backward pass (counted tensor by tensor, as a Llama
layer under peft really keeps them; docs/memory.md lists them), the logits, and on CPU the heap
memory glibc's malloc keeps after freeing it. Pure arithmetic: preflight compares it with a
device's memory, and tests/integration/test_memory_estimate.py compares it with measured peaks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

GIB = 2**30
WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "8bit": 1.0, "4bit": 0.5 + 0.5 / 64 * 1.25}  # nf4 + double-quant constants
LINEARS_PER_LAYER = 7  # q, k, v, o, gate, up, down: what "all-linear" LoRA adapts in a Llama layer
FP32 = 4  # RMSNorm upcasts its input to fp32 whatever the compute dtype, and keeps that copy
# On CPU, glibc's malloc serves tensors under its mmap threshold (which rises to 32 MiB as large
# blocks are freed) from a heap that keeps freed chunks resident; the next step's tensors refill
# those holes only in part, so resident memory settles above the live peak. That excess does not
# follow from the shapes; measured (docs/memory.md) it is 0.7-1.4 times the activations the layers
# keep without dropout's copies, with dropout on or off (per dropout-inclusive byte, dropout-free
# runs would need twice the factor) and with checkpointing or without (checkpointing frees the
# activations, glibc keeps the pages). 1.0: fitted on tests.memory_probe.FITTED, checked on the rest.
CPU_HEAP_RETAINED = 1.0


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
    allocator: float = 0.0  # freed memory the allocator keeps resident (glibc's heap on CPU)

    @property
    def total(self) -> float:
        return self.weights + self.lora + self.gradients + self.optimizer + self.activations + self.logits + self.overhead + self.allocator

    def as_gib(self) -> dict[str, float]:
        parts = ("weights", "lora", "gradients", "optimizer", "activations", "logits", "overhead", "allocator")
        return {name: round(getattr(self, name) / GIB, 3) for name in parts} | {"total": round(self.total / GIB, 3)}


def layer_activation_bytes(shape: ModelShape, *, compute_bytes: int, lora_rank: int, seq_len: int, lora_dropout: bool,
                           attention: Literal["fused", "eager"], device: Literal["cuda", "cpu"]) -> float:
    """Bytes one decoder layer keeps for the backward pass, per token (estimate()'s arguments)."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_width
    lora_inputs = sum(n_in for n_in, _ in shape.linear_shapes())  # 6h + i: one input per adapted linear
    norms = 2 * h * FP32  # the inputs of the two RMSNorms (the residual stream), upcast to fp32
    if attention == "fused":  # SDPA/flash keeps q, k, v and its output (o_proj's input), not the s x s scores
        attention_kept = (2 * h + 2 * kv) * compute_bytes
    else:  # eager: q, k and v repeated to all heads, and the softmax's fp32 probabilities (and their cast)
        probabilities = shape.heads * seq_len * (FP32 + (compute_bytes if compute_bytes < FP32 else 0))
        attention_kept = 3 * h * compute_bytes + probabilities
    mlp = 3 * i * compute_bytes  # gate, silu(gate), up: the product's backward needs all three
    if lora_dropout or compute_bytes < 4:
        # Each adapted linear keeps its own input copy for its A matrix's gradient: the dropout's output,
        # or under mixed precision the cast of its input (peft keeps adapters in fp32, autocast casts back).
        adapter_inputs = lora_inputs * compute_bytes
    else:  # fp32 without dropout: the A matrices share their inputs (q/k/v's, gate/up's, down's); o_proj's is
        # fused attention's output, kept already, or eager attention's transposed copy
        adapter_inputs = (2 * h + i + (0 if attention == "fused" else h)) * compute_bytes
    # Dropout's mask: in the adapters' dtype (fp32) on CPU, where dropout is input * mask; one byte under CUDA's fused kernel.
    mask = lora_inputs * (FP32 if device == "cpu" else 1) if lora_dropout else 0
    adapter_outputs = LINEARS_PER_LAYER * lora_rank * compute_bytes  # each A's output, kept by its B
    return norms + attention_kept + mlp + adapter_inputs + mask + adapter_outputs


def estimate(shape: ModelShape, *, weights: str, compute_bytes: int, lora_rank: int, batch: int, seq_len: int,
             gradient_checkpointing: bool, overhead_bytes: float, lora_dropout: bool = True,
             attention: Literal["fused", "eager"] = "fused", device: Literal["cuda", "cpu"] = "cuda") -> Estimate:
    """Peak training memory of one process, in bytes, by part.

    `weights`: fp32, bf16, fp16, 8bit or 4bit; `compute_bytes`: 4 for fp32 training, 2 for bf16/fp16.
    `lora_dropout`: whether lora.dropout > 0 (the default config's 0.05 is); dropout makes each adapted
    linear keep its own dropped-out input and the dropout mask.
    `attention`: "fused" for SDPA/flash attention (transformers' default, on CPU too), which keeps
    nothing that grows with seq_len squared; "eager" for attn_implementation="eager", which keeps
    the batch x heads x seq_len x seq_len attention probabilities.
    `device`: "cuda" (also right for other accelerators with a caching allocator) or "cpu", where
    dropout masks are kept in fp32 (the adapters' dtype) rather than as bytes, and glibc's malloc
    keeps freed heap memory resident (the `allocator` part, zero on "cuda").
    """
    frozen = shape.parameters() - shape.embedding_parameters()
    embedding_bytes = 4.0 if weights == "fp32" else 2.0  # quantization leaves embeddings and the head in 16 bits
    lora = shape.lora_parameters(lora_rank)
    tokens = batch * seq_len
    h, i = shape.hidden, shape.intermediate
    per_layer = layer_activation_bytes(shape, compute_bytes=compute_bytes, lora_rank=lora_rank, seq_len=seq_len,
                                       lora_dropout=lora_dropout, attention=attention, device=device)
    head = h * (FP32 + compute_bytes)  # the final norm's fp32 input and its output, the LM head's input
    # While one layer runs backward, the gradients of its MLP's two i-wide inputs and of the residual stream coexist.
    backward = (2 * i + h) * compute_bytes
    if gradient_checkpointing:  # each layer's input, and one layer recomputed at a time
        activations = tokens * (shape.layers * h * compute_bytes + per_layer + head + backward)
    else:
        activations = tokens * (shape.layers * per_layer + head + backward)
    allocator = 0.0
    if device == "cpu":  # see CPU_HEAP_RETAINED; checkpointing frees these activations layer by layer, glibc keeps the pages
        without_dropout = layer_activation_bytes(shape, compute_bytes=compute_bytes, lora_rank=lora_rank, seq_len=seq_len,
                                                 lora_dropout=False, attention=attention, device=device)
        allocator = CPU_HEAP_RETAINED * tokens * (shape.layers * without_dropout + head)
    return Estimate(
        weights=frozen * WEIGHT_BYTES[weights] + shape.embedding_parameters() * embedding_bytes,
        lora=lora * 4.0,  # trainable weights stay fp32 (mixed precision keeps a master copy)
        gradients=lora * 4.0,
        optimizer=lora * 8.0,  # AdamW: two fp32 states
        activations=activations,
        # fp32 logits and their gradient, as transformers' loss makes them; trl's fused LM head (the cpu
        # stack's trl) works in tiles instead, so there this bounds them from above for large vocabularies
        logits=tokens * shape.vocab * 4.0 * 2,
        overhead=overhead_bytes,
        allocator=allocator,
    )
