"""Load a finished run (base model + adapter) and generate text with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load(run_dir: Path) -> tuple[Any, Any]:
    """The run's base model with its trained adapter applied, and its tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runner.engines.hf_compat import quiet_libraries
    from runner.models import resolve_model
    from runner.rundir import ADAPTER_DIR, CONFIG_FILE

    quiet_libraries()  # the answer and lockstep's one line, not the libraries' loading bar and deprecation notices
    config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    base = resolve_model(config["model"]["name_or_path"], config["model"].get("gguf_file"))
    tokenizer = AutoTokenizer.from_pretrained(run_dir / ADAPTER_DIR)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), run_dir / ADAPTER_DIR)
    model.eval()
    return model, tokenizer


def generate(model: Any, tokenizer: Any, prompt: str | list[int], max_new_tokens: int = 32) -> str:
    """Greedy continuation of `prompt` (text, or the token ids of runner.training.prompts), without the prompt itself."""
    import torch

    if isinstance(prompt, str):
        prompt = tokenizer(prompt)["input_ids"]
    # Only ids and mask: some tokenizers add token_type_ids, which causal LMs reject in generate().
    inputs = {"input_ids": torch.tensor([prompt]), "attention_mask": torch.ones(1, len(prompt), dtype=torch.long)}
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(output[0, len(prompt) :], skip_special_tokens=True)
