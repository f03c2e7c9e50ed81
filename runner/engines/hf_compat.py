"""Differences between the transformers/trl generations lockstep supports, in one place.

Supported: the pinned generation used on Modal (transformers 4.46, trl 0.11) and current
releases (transformers 5.x, trl 1.x). Features are detected by signature, not by version
number, so releases in between work where their API matches either side.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any


def sft_config(sft_config_cls: type, *, max_seq_len: int, **common: Any) -> Any:
    """An SFTConfig that trains on lockstep's pre-tokenized data, whatever the trl release."""
    fields = {f.name for f in dataclasses.fields(sft_config_cls)}
    kwargs = dict(common)
    # trl <= 0.19 calls it max_seq_length; later releases call it max_length.
    kwargs["max_seq_length" if "max_seq_length" in fields else "max_length"] = max_seq_len
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing; the old name warns.
    if "activation_checkpointing" in fields and "gradient_checkpointing" in kwargs:
        kwargs["activation_checkpointing"] = kwargs.pop("gradient_checkpointing")
    kwargs["packing"] = False
    kwargs["dataset_kwargs"] = {"skip_prepare_dataset": True}
    unknown = sorted(set(kwargs) - fields)
    if unknown:  # a release removed an argument lockstep relies on: say which, don't guess
        raise RuntimeError(f"this trl release has no SFTConfig argument(s): {', '.join(unknown)}")
    return sft_config_cls(**kwargs)


def tokenizer_argument(trainer_cls: type, tokenizer: Any) -> dict[str, Any]:
    """trl 0.11 takes `tokenizer=`; newer trainers take `processing_class=`."""
    params = inspect.signature(trainer_cls.__init__).parameters
    return {"processing_class": tokenizer} if "processing_class" in params else {"tokenizer": tokenizer}


def dtype_argument(dtype: Any) -> dict[str, Any]:
    """transformers 5 renamed `torch_dtype` to `dtype` in from_pretrained."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def quiet_libraries() -> None:
    """Keep the terminal to lockstep's own bar and lines: transformers' bar while it loads weights, and the
    deprecation notice trl and peft trigger by reading transformers' old `is_gradient_checkpointing` name
    (theirs to change, printed on every load)."""
    import warnings

    import transformers

    transformers.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
