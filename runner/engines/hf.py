"""The `hf` engine: transformers model, peft LoRA adapter, trl SFT trainer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from peft import LoraConfig, get_peft_model
from trl import SFTConfig, SFTTrainer

from runner.config import RunConfig
from runner.engines import Result, TrainContext
from runner.engines.hf_callbacks import MetricsCallback, ProgressCallback, TokenCounter
from runner.engines.hf_checkpoint import TRAINING_STATE, Checkpointer, SaveTrigger
from runner.engines.hf_compat import dtype_argument, quiet_libraries, sft_config, tokenizer_argument
from runner.errors import EngineError
from runner.models import load_tokenizer, resolve_model
from runner.rundir import ADAPTER_DIR, TRAINER_DIR
from runner.training import data, distributed
from runner.training.checkpoint import Checkpoint, Totals
from runner.training.final_outputs import copier, publish
from runner.training.metrics import MetricsLog
from runner.training.saver import Policy
from runner.training.schedule import eval_interval, total_steps, warmup_steps
from runner.util import console


def train(config: RunConfig, context: TrainContext) -> Result:
    quiet_libraries()
    datasets.disable_progress_bars()
    precision = resolve_precision(config.train.precision)
    model_path = resolve_model(config.model.name_or_path, config.model.gguf_file)
    tokenizer = load_tokenizer(model_path, config)
    train_set = _load_split(config.data.train, config, tokenizer)
    valid_set = _load_split(config.data.valid, config, tokenizer) if config.data.valid else None
    steps = total_steps(config, len(train_set.input_ids))
    resume = context.resume_from
    carried = Totals.recorded(resume)
    facts = {"engine": "hf", "train_rows": len(train_set.input_ids), "valid_rows": len(valid_set.input_ids) if valid_set else 0}
    details = {"precision": precision, "device": _device(), "truncated_rows": train_set.truncated, "dropped_rows": train_set.dropped,
               "resumed_from_step": resume.step if resume else None}
    if resume is not None and resume.step >= steps:
        # Stopped after its last checkpoint, before its outputs were written: training again would add a step.
        if distributed.is_main():
            console.say(f"step {resume.step} of {steps} is done: writing the run's outputs from {resume.path.name}")
            _publish_adapter(context, resume)
        return Result(**facts, steps=resume.step, attempt=Totals(), totals=carried, stopped=False, details=details)

    transformers.set_seed(config.train.seed)  # LoRA init draws from the global RNG
    model = get_peft_model(load_model(model_path, config, precision), lora_config(config))
    _sort_target_modules(model)
    policy = Policy(every_percent=config.checkpoint.every_percent, every_minutes=config.checkpoint.every_minutes, total_steps=steps)
    tokens = TokenCounter()
    metrics = MetricsCallback(MetricsLog(context.run_dir, total_steps=steps, trackers=context.trackers), tokens)
    checkpointer = Checkpointer(context.store, policy, **context.saver_options(config, carried))
    trainer = LockstepTrainer(
        model=model,
        args=training_arguments(config, context.run_dir, precision, steps, has_eval=valid_set is not None, resuming=resume is not None,
                                layer_classes=getattr(model, "_no_split_modules", None) or []),
        train_dataset=_dataset(train_set),
        eval_dataset=_dataset(valid_set) if valid_set else None,
        data_collator=PadCollator(tokenizer.pad_token_id),
        callbacks=[metrics, SaveTrigger(checkpointer, context.stop), progress := ProgressCallback()],
        **tokenizer_argument(SFTTrainer, tokenizer),
    )
    trainer.token_counter = tokens
    trainer.checkpointer = checkpointer
    trainer.remove_callback(transformers.PrinterCallback)  # lockstep's bar and metrics replace its raw dict prints
    checkpointer.begin()
    try:
        with checkpointer.settled_on_failure():
            trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
            stopped = context.stop.requested and trainer.state.global_step < steps
            if not stopped and checkpointer.last_step != trainer.state.global_step:
                checkpointer.save_now(trainer)  # the policy saves at the last step; the outputs are made from that checkpoint
    finally:
        progress.close()  # the trainer skips on_train_end when a step or a save raises
    checkpointer.finish()
    attempt = checkpointer.attempt(tokens.total)
    if not stopped and checkpointer.last is not None:  # rank 0, which wrote it
        _publish_adapter(context, checkpointer.last)
    return Result(**facts, steps=trainer.state.global_step, attempt=attempt, totals=carried + attempt, stopped=stopped, details=details)


def _publish_adapter(context: TrainContext, final: Checkpoint) -> None:
    """RUN/adapter: the final checkpoint's adapter files (the same bytes the trainer's save_model writes)."""
    publish(context.run_dir, ADAPTER_DIR, copier(final.path, leave_out=TRAINING_STATE), context.store)


def _sort_target_modules(model: Any) -> None:
    """PEFT records the modules `all-linear` matched as a set, saved in the set's order, which changes from one
    process to the next: sorted, identical runs write identical adapter_config.json files."""
    for adapter in model.peft_config.values():
        if isinstance(adapter.target_modules, set | list | tuple):
            adapter.target_modules = sorted(adapter.target_modules)


def _device() -> str:
    """Where the trainer puts the model: this process's GPU, or the CPU."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"


def check(config: RunConfig) -> None:
    """Raise EngineError if this environment cannot run `config`; writes nothing."""
    resolve_precision(config.train.precision)
    if config.quantization == "4bit":
        _require_bitsandbytes()


def resolve_precision(requested: str) -> str:
    cuda = torch.cuda.is_available()
    if requested == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else ("fp16" if cuda else "fp32")
    if requested in ("bf16", "fp16") and not cuda:
        raise EngineError(
            f"train.precision={requested} needs a CUDA GPU and none is visible here; "
            "use --set train.precision=fp32 (or auto) for CPU runs"
        )
    return requested


def load_model(model_path: str, config: RunConfig, precision: str) -> Any:
    kwargs: dict[str, Any] = {"revision": config.model.revision, "trust_remote_code": config.model.trust_remote_code}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    kwargs.update(dtype_argument(dtype))
    if config.quantization == "4bit":
        kwargs["quantization_config"] = _four_bit_config(dtype)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if config.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.train.gradient_checkpointing)
    elif config.train.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings would otherwise cut the gradient path
    return model


def _four_bit_config(dtype: Any) -> Any:
    _require_bitsandbytes()
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
    )


def _require_bitsandbytes() -> None:
    if not torch.cuda.is_available():
        raise EngineError("quantization: 4bit needs a CUDA GPU (bitsandbytes); use quantization: none on this machine")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise EngineError("quantization: 4bit needs the bitsandbytes package; install it or use a CUDA stack") from exc


def lora_config(config: RunConfig) -> LoraConfig:
    targets = config.lora.target_modules
    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=targets[0] if targets == ("all-linear",) else list(targets),
        task_type="CAUSAL_LM",
    )


def training_arguments(
    config: RunConfig, run_dir: Path, precision: str, steps: int, *, has_eval: bool, resuming: bool, layer_classes: Sequence[str] = ()
) -> Any:
    t = config.train
    eval_steps = eval_interval(config, steps)
    return sft_config(
        SFTConfig,
        max_seq_len=t.max_seq_len,
        output_dir=str(run_dir / TRAINER_DIR),
        max_steps=steps,
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler,
        warmup_steps=warmup_steps(config, steps),
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        full_determinism=t.deterministic,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=t.gradient_checkpointing,
        logging_steps=t.log_every_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        eval_on_start=has_eval and not resuming,  # a resumed run already has its step-0 evaluation
        save_strategy="no",  # lockstep's SaveTrigger decides when; Checkpointer writes atomically
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning without a GPU only warns
        use_cpu=not torch.cuda.is_available(),  # also what makes a multi-process CPU run (torchrun) use DDP
        ddp_backend=None if config.distributed.backend == "auto" else config.distributed.backend,
        ddp_find_unused_parameters=False,  # every LoRA parameter takes part in each step; the search costs a graph walk
        **fsdp_arguments(config, layer_classes),
    )


def fsdp_arguments(config: RunConfig, layer_classes: Sequence[str]) -> dict[str, Any]:
    """FSDP: each decoder layer's weights sharded over the processes, gathered whole for checkpoints
    (so a checkpoint is the same files as under DDP, and resumes on any number of processes)."""
    if config.distributed.strategy != "fsdp":
        return {}
    return {
        "fsdp": "full_shard auto_wrap",
        "fsdp_config": {
            "transformer_layer_cls_to_wrap": list(layer_classes),
            "use_orig_params": True,  # LoRA trains a few parameters among frozen ones
            "state_dict_type": "FULL_STATE_DICT",
        },
    }


class PadCollator:
    """Right-pads a batch; padding is masked out of attention and loss."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        ids, mask, labels = [], [], []
        for f in features:
            pad = longest - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_id] * pad)
            mask.append([1] * len(f["input_ids"]) + [0] * pad)
            labels.append(list(f["labels"]) + [data.IGNORE_INDEX] * pad)
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}


def _load_split(ref: str, config: RunConfig, tokenizer: Any) -> data.Tokenized:
    rows = data.read_jsonl(ref)
    fmt = data.detect_format(rows, config.data.format, ref)
    return data.tokenize(rows, fmt, tokenizer, config.train.max_seq_len, ref)


def _dataset(split: data.Tokenized) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"input_ids": split.input_ids, "labels": split.labels})


class LockstepTrainer(SFTTrainer):  # type: ignore[misc]
    """SFTTrainer that saves through lockstep's atomic checkpoints and counts real (non-padding) tokens."""

    token_counter: TokenCounter | None = None
    checkpointer: Checkpointer | None = None

    def _save_checkpoint(self, model: Any, trial: Any, *args: Any, **kwargs: Any) -> None:
        # Replaces the trainer's in-place `checkpoint-N` writer; called after evaluation, as the original is.
        if self.checkpointer is not None:
            self.checkpointer.save_now(self)

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if self.token_counter is not None and "attention_mask" in inputs:
            self.token_counter.add(inputs["attention_mask"].sum())
        return super().training_step(model, inputs, *args, **kwargs)
