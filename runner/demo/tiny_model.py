"""Builds the built-in Llama models (random weights) and a BPE tokenizer trained on the demo data.

The result is saved in standard Hugging Face format, so it loads through the same
`from_pretrained` path as a real model, and through mlx-lm's `load`. The weights are drawn
with numpy, not torch, so every stack builds the same model (the `mlx` stack has no torch).
Building is deterministic and cached: the cache key covers the model config, the training
text and the transformers version.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.util.files import build_once

if TYPE_CHECKING:
    import numpy as np

HERE = Path(__file__).parent
TRAIN_FILE = HERE / "data" / "train.jsonl"
SPECIAL_TOKENS = {"pad_token": "<|pad|>", "bos_token": "<|bos|>", "eos_token": "<|eos|>"}
# A minimal chat template so the `messages` data format works with the demo model too.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}<|eos|>{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
BUILD_VERSION = "2"  # bump when the build recipe changes


def cache_dir() -> Path:
    from runner.util import cache

    return cache.root() / "models"


def ensure_built(name: str = "tiny-llama") -> Path:
    """Return the directory of the built model, building it first if the cache has none."""
    import transformers

    key = hashlib.sha256()
    for part in (BUILD_VERSION, transformers.__version__, model_config(name).read_text(), TRAIN_FILE.read_text()):
        key.update(part.encode())
    return build_once(cache_dir() / f"{name}-{key.hexdigest()[:12]}", lambda staging: build(staging, name), complete="config.json")


def model_config(name: str) -> Path:
    """The Llama config of the built-in model `name` (tiny-llama, small-llama)."""
    return HERE / f"{name}.json"


def training_texts() -> list[str]:
    rows = [json.loads(line) for line in TRAIN_FILE.read_text().splitlines() if line.strip()]
    return [row["prompt"] + row["completion"] for row in rows]


def build(out_dir: Path, name: str = "tiny-llama") -> None:
    """Write tokenizer and randomly initialised model into `out_dir`."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    settings = json.loads(model_config(name).read_text())
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=settings["vocab_size"],
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(training_texts(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, **SPECIAL_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = settings["max_position_embeddings"]
    tokenizer.save_pretrained(out_dir)

    config = LlamaConfig(
        **{k: v for k, v in settings.items() if k not in ("architectures", "model_type")},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.architectures = settings["architectures"]
    config.save_pretrained(out_dir)
    save_file(random_weights(config.to_dict()), str(out_dir / "model.safetensors"), metadata={"format": "pt"})


def random_weights(config: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """A Llama model's weights as transformers initialises them (normal(0, initializer_range) for
    linear and embedding weights, the padding token's embedding zero, norms one), in float32."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hidden, inner, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    std = config["initializer_range"]

    def normal(*shape: int) -> np.ndarray:
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    weights = {"model.embed_tokens.weight": normal(vocab, hidden)}
    if config.get("pad_token_id") is not None:
        weights["model.embed_tokens.weight"][config["pad_token_id"]] = 0.0
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        shapes = {
            "self_attn.q_proj": (config["num_attention_heads"] * head_dim, hidden), "self_attn.k_proj": (kv, hidden),
            "self_attn.v_proj": (kv, hidden), "self_attn.o_proj": (hidden, config["num_attention_heads"] * head_dim),
            "mlp.gate_proj": (inner, hidden), "mlp.up_proj": (inner, hidden), "mlp.down_proj": (hidden, inner),
        }
        for name, shape in shapes.items():
            weights[f"{prefix}.{name}.weight"] = normal(*shape)
        weights[f"{prefix}.input_layernorm.weight"] = np.ones(hidden, np.float32)
        weights[f"{prefix}.post_attention_layernorm.weight"] = np.ones(hidden, np.float32)
    weights["model.norm.weight"] = np.ones(hidden, np.float32)
    if not config.get("tie_word_embeddings"):
        weights["lm_head.weight"] = normal(vocab, hidden)
    return weights
