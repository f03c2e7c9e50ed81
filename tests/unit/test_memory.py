"""The memory estimate's counts match real models; its parts move the way training memory does.
(How close the totals come to measured peaks is checked where training runs: preflight's tests.)"""

from __future__ import annotations

import json

import pytest

from runner.demo import tiny_model
from runner.memory import ModelShape, estimate

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
