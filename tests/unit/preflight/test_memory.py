"""The memory estimate's counts match real models; its parts move the way training memory does.
(How close the totals come to measured peaks is checked where training runs: tests/integration/test_memory_estimate.py.)"""

from __future__ import annotations

import json

import pytest

from runner.demo import tiny_model
from runner.preflight.memory import ModelShape, estimate, layer_activation_bytes

LLAMA_31_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
               "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False}
LLAMA_32_1B = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
               "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True}


def test_published_parameter_counts():
    assert ModelShape.from_config(LLAMA_31_8B).parameters() == 8_030_261_248
    assert ModelShape.from_config(LLAMA_32_1B).parameters() == 1_235_814_400


@pytest.mark.parametrize("name", ["tiny-llama", "small-llama"])
def test_counts_equal_the_built_models_and_peft(name):
    import transformers
    from peft import LoraConfig, get_peft_model

    config = json.loads(tiny_model.model_config(name).read_text())
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
    shape = ModelShape.from_config(config)
    assert shape.parameters() == sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert shape.lora_parameters(16) == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def test_parts_move_the_way_training_memory_does():
    shape = ModelShape.from_config(LLAMA_31_8B)

    def total(**changes):
        settings = dict(weights="bf16", compute_bytes=2, lora_rank=16, batch=4, seq_len=2048, gradient_checkpointing=False,
                        overhead_bytes=0) | changes
        return estimate(shape, **settings)

    assert total(weights="4bit").weights < total(weights="8bit").weights < total().weights
    assert 4.5 < total(weights="4bit").as_gib()["weights"] < 6  # 8B in nf4, embeddings and head in bf16
    assert total(gradient_checkpointing=True).activations < total().activations / 10
    assert total(batch=8).activations == 2 * total().activations and total(batch=8).logits == 2 * total().logits
    assert total(lora_rank=32).optimizer == 2 * total().optimizer


def _saved_bytes(config: dict, layers: int, *, dropout: float, attention: str, bf16: bool, batch: int, seq_len: int) -> int:
    """Bytes of the tensors autograd keeps during one forward pass of the real peft model (parameters aside)."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config | {"num_hidden_layers": layers}, attn_implementation=attention))
    if bf16:
        model = model.to(torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=16, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, config["vocab_size"], (batch, seq_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return sum(kept.values())


@pytest.mark.parametrize(("dropout", "attention", "bf16"), [(0.05, "sdpa", False), (0.0, "sdpa", False), (0.05, "eager", False),
                                                             (0.0, "eager", False), (0.05, "sdpa", True), (0.0, "sdpa", True)])
def test_a_layers_activations_are_what_autograd_keeps(dropout, attention, bf16):
    """Term by term: one more decoder layer makes the real peft model keep what layer_activation_bytes counts
    (up to the attention's per-head logsumexp, the norms' per-token scale and, in bf16, the adapters' weight casts)."""
    config = json.loads(tiny_model.model_config("tiny-llama").read_text())
    batch, seq_len = 4, 256
    measured = (_saved_bytes(config, 2, dropout=dropout, attention=attention, bf16=bf16, batch=batch, seq_len=seq_len)
                - _saved_bytes(config, 1, dropout=dropout, attention=attention, bf16=bf16, batch=batch, seq_len=seq_len))
    counted = batch * seq_len * layer_activation_bytes(
        ModelShape.from_config(config), compute_bytes=2 if bf16 else 4, lora_rank=16, seq_len=seq_len, lora_dropout=dropout > 0,
        attention="fused" if attention == "sdpa" else "eager", device="cpu")
    assert measured == pytest.approx(counted, rel=0.03)


def test_device_terms():
    shape = ModelShape.from_config(LLAMA_32_1B)

    def part(name, **changes):
        settings = dict(weights="fp32", compute_bytes=4, lora_rank=16, batch=2, seq_len=1024, gradient_checkpointing=False,
                        overhead_bytes=0) | changes
        return getattr(estimate(shape, **settings), name)

    assert part("allocator") == 0 < part("allocator", device="cpu")  # glibc's heap retention is a CPU term
    assert part("allocator", device="cpu") == part("allocator", device="cpu", lora_dropout=False)
    assert part("activations", device="cpu") > part("activations")  # CPU's dropout masks are fp32, CUDA's are bytes
    assert part("activations", lora_dropout=False) < part("activations")
    # Eager attention keeps the seq_len x seq_len probabilities: per token they grow with seq_len; fused ones do not.
    assert part("activations", attention="eager", seq_len=2048) / 2048 > part("activations", attention="eager") / 1024
    assert part("activations", seq_len=2048) == 2 * part("activations")
