"""Preflight's check of lora.target_modules against the model's own module names, found on a skeleton
of the model built on torch's meta device from its config.json (no weights are read or allocated).

Names match as PEFT matches a list of them: a module whose dotted name is the name, or ends with
`.name`. Each listed name must match at least one module LoRA can adapt; otherwise PEFT stops the
run after the model has loaded, with a traceback, and the first save never comes.
"""

from __future__ import annotations

import difflib
from typing import Any

from runner.config import RunConfig
from runner.problems import Check

ALL_LINEAR = "all-linear"
ADAPTABLE = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D", "MultiheadAttention")  # PEFT's LoRA layer types
NAME = "lora.targets"


def check(config: RunConfig, model_config: dict[str, Any] | None) -> Check:
    targets = config.lora.target_modules
    if targets == (ALL_LINEAR,):
        return Check(name=NAME, status="ok", summary="all-linear: every linear layer of the decoder gets an adapter")
    if ALL_LINEAR in targets:
        return Check(name=NAME, status="error", summary=f"lora.target_modules {list(targets)}: all-linear stands alone",
                     fix="use either all-linear or a list of module names")
    modules = _module_types(config, model_config)
    if isinstance(modules, str):
        return Check(name=NAME, status="ok", summary=f"lora.target_modules {list(targets)} not checked: {modules}")
    linear = sorted({name.rsplit(".", 1)[-1] for name, kind in modules.items() if kind == "Linear"})
    problems = [_problem(target, modules, linear) for target in targets]
    problems = [problem for problem in problems if problem]
    if problems:
        return Check(name=NAME, status="error", summary="; ".join(problems),
                     fix=f"name the model's layers (its linear layers are {', '.join(linear)}), or use all-linear")
    return Check(name=NAME, status="ok", summary=f"lora.target_modules {list(targets)} each name a layer of the model")


def _problem(target: str, modules: dict[str, str], linear: list[str]) -> str | None:
    matched = {kind for name, kind in modules.items() if name == target or name.endswith(f".{target}")}
    if not matched:
        close = difflib.get_close_matches(target, linear, n=1)
        return f"'{target}' names no module of the model" + (f" (did you mean '{close[0]}'?)" if close else "")
    if not matched & set(ADAPTABLE):
        return f"'{target}' names {', '.join(sorted(matched))} modules, which LoRA cannot adapt (name the linear layers inside them)"
    return None


def _module_types(config: RunConfig, model_config: dict[str, Any] | None) -> dict[str, str] | str:
    """Every module's dotted name -> its class name; or why they cannot be listed here."""
    if model_config is None or "model_type" not in model_config:
        return "the model's config.json has no model_type"
    if config.model.trust_remote_code:
        return "the model's code is its own (trust_remote_code), not run by preflight"
    try:
        import torch
        import transformers
    except ImportError:
        return "torch and transformers are not installed here (run preflight in the stack's environment)"
    settings = {key: value for key, value in model_config.items() if key != "model_type"}
    try:
        model_settings = transformers.AutoConfig.for_model(model_config["model_type"], **settings)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(model_settings)
    except Exception as exc:  # an architecture this transformers release does not know: training would say so itself
        return f"the model could not be laid out here ({type(exc).__name__}: {exc})"
    return {name: type(module).__name__ for name, module in model.named_modules() if name}
