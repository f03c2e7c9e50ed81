"""Builds the built-in Llama models (random weights) and a BPE tokenizer trained on the demo data.

The result is saved in standard Hugging Face format, so it loads through the same
`from_pretrained` path as a real model. Building is deterministic and cached: the cache
key covers the model config, the training text and the transformers version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
TRAIN_FILE = HERE / "data" / "train.jsonl"
SPECIAL_TOKENS = {"pad_token": "<|pad|>", "bos_token": "<|bos|>", "eos_token": "<|eos|>"}
# A minimal chat template so the `messages` data format works with the demo model too.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}<|eos|>{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
BUILD_VERSION = "1"  # bump when the build recipe changes


def cache_dir() -> Path:
    root = os.environ.get("LOCKSTEP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lockstep"
    return Path(root) / "models"


def ensure_built(name: str = "tiny-llama") -> Path:
    """Return the directory of the built model, building it first if the cache has none."""
    import transformers

    key = hashlib.sha256()
    for part in (BUILD_VERSION, transformers.__version__, model_config(name).read_text(), TRAIN_FILE.read_text()):
        key.update(part.encode())
    target = cache_dir() / f"{name}-{key.hexdigest()[:12]}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: a concurrent or interrupted build never leaves half a model.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging, name)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def model_config(name: str) -> Path:
    """The Llama config of the built-in model `name` (tiny-llama, small-llama)."""
    return HERE / f"{name}.json"


def training_texts() -> list[str]:
    rows = [json.loads(line) for line in TRAIN_FILE.read_text().splitlines() if line.strip()]
    return [row["prompt"] + row["completion"] for row in rows]


def build(out_dir: Path, name: str = "tiny-llama") -> None:
    """Write tokenizer and randomly initialised model into `out_dir`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
