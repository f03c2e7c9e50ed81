"""The built-in model's numpy-drawn weights (numpy, so the mlx stack, which has no torch, builds the same model):
transformers' Llama names, shapes and spread, the same draw every time, and the built model holding them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from runner.demo import tiny_model


def llama_config(name: str) -> transformers.LlamaConfig:
    """The config tiny_model.build makes (special tokens 0, 1, 2: pad, bos, eos as its tokenizer numbers them)."""
    settings = json.loads(tiny_model.model_config(name).read_text())
    config = transformers.LlamaConfig(**{k: v for k, v in settings.items() if k not in ("architectures", "model_type")},
                                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config.architectures = settings["architectures"]
    return config


@pytest.mark.parametrize("name", ["tiny-llama", "small-llama"])
def test_random_weights_match_transformers_llama(name):
    config = llama_config(name)
    weights = tiny_model.random_weights(config.to_dict())
    with torch.device("meta"):  # names and shapes only: no need to initialise
        reference = transformers.LlamaForCausalLM(config).state_dict()
    assert sorted(weights) == sorted(reference)
    for key, tensor in reference.items():
        assert tuple(weights[key].shape) == tuple(tensor.shape), key
        assert weights[key].dtype == np.float32, key
    std = config.initializer_range
    for key, value in weights.items():
        if key.endswith("norm.weight"):
            assert np.all(value == 1.0), key
        else:
            drawn = value[1:] if key == "model.embed_tokens.weight" else value
            assert abs(float(drawn.std()) - std) < 0.05 * std, key
            assert abs(float(drawn.mean())) < 0.05 * std, key
    assert np.all(weights["model.embed_tokens.weight"][0] == 0.0)  # the pad token's row
    assert np.any(weights["model.embed_tokens.weight"][1] != 0.0)


def test_random_weights_are_deterministic():
    settings = llama_config("tiny-llama").to_dict()
    first, second = tiny_model.random_weights(settings), tiny_model.random_weights(settings)
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[key], second[key]) for key in first)
    other = tiny_model.random_weights(settings, seed=1)
    assert not np.array_equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])
    # Every tensor is drawn separately: no two weights of one shape are equal.
    assert not np.array_equal(first["model.layers.0.mlp.gate_proj.weight"], first["model.layers.0.mlp.up_proj.weight"])


def test_built_model_loads_and_holds_random_weights():
    directory = tiny_model.ensure_built()
    assert directory.parent == tiny_model.cache_dir() and directory.name.startswith("tiny-llama-")
    assert tiny_model.ensure_built() == directory  # cached: the same directory again
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM"
    expected = tiny_model.random_weights(json.loads((directory / "config.json").read_text()))
    loaded = model.state_dict()
    assert sorted(loaded) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], torch.from_numpy(value)), key
