"""The demo's fine-tune written as a plain transformers + peft + trl script, without lockstep.

The baseline of `test_training_overhead.py`: the same model files, data, tokens, batch, steps,
LoRA adapter, optimizer, schedule, precision and evaluations as lockstep's `hf` engine, and
nothing else (no run directory, manifest, metrics file, checkpoints or signal handling).
Gradient checkpointing is set explicitly (off unless asked for), as lockstep sets it: recent trl
releases turn it on by default, which on the demo costs about a quarter of the throughput.
It imports nothing from lockstep, so it can be read (and run) on its own:

    python tests/bench/bare_trl.py --model MODEL_DIR --train train.jsonl --valid valid.jsonl \\
        --max-steps 144 --out result.json

`result.json` holds steps, train_tokens (non-padding tokens of the training steps),
wall_time_s (trainer.train() alone, as lockstep's summary.json measures it), tokens_per_s,
the last loss, every step's gradient norm and throughput (evaluations left out, as in lockstep's
metrics), and the Unix time of the first step.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import time
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.time()
    import datasets
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from trl import SFTConfig, SFTTrainer

    transformers.logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_set = _tokenize(args.train, tokenizer, args.max_seq_len)
    valid_set = _tokenize(args.valid, tokenizer, args.max_seq_len) if args.valid else None

    cuda = torch.cuda.is_available()
    precision = args.precision if args.precision != "auto" else ("bf16" if cuda and torch.cuda.is_bf16_supported() else "fp16" if cuda else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    transformers.set_seed(args.seed)  # LoRA's initial weights come from the global RNG
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, **{dtype_key: dtype})
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)

    eval_steps = max(1, round(args.max_steps * args.eval_every_percent / 100))
    settings: dict[str, Any] = dict(
        output_dir=str(args.work_dir), max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size, gradient_accumulation_steps=1, learning_rate=args.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=math.ceil(args.warmup_ratio * args.max_steps), weight_decay=0.0,
        max_grad_norm=1.0, seed=args.seed, bf16=precision == "bf16", fp16=precision == "fp16", logging_steps=1,
        eval_strategy="steps" if valid_set else "no", eval_steps=eval_steps if valid_set else None, eval_on_start=bool(valid_set),
        save_strategy="no", report_to="none", disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0,
        dataloader_pin_memory=cuda, use_cpu=not cuda, packing=False, dataset_kwargs={"skip_prepare_dataset": True},
    )
    fields = set(SFTConfig.__dataclass_fields__)
    settings["max_seq_length" if "max_seq_length" in fields else "max_length"] = args.max_seq_len  # trl <= 0.19 / later
    # Explicit: recent trl releases turn gradient checkpointing on by default (transformers 5 calls it activation_checkpointing).
    settings["activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"] = args.gradient_checkpointing
    logged: list[dict[str, Any]] = []

    class Trainer(SFTTrainer):  # type: ignore[misc]
        tokens = 0  # non-padding tokens of the training steps
        pending = 0  # ... since the last logged step

        def training_step(self, model: Any, inputs: dict[str, Any], *rest: Any, **kwargs: Any) -> Any:
            count = int(inputs["attention_mask"].sum())
            self.tokens += count
            self.pending += count
            return super().training_step(model, inputs, *rest, **kwargs)

    class StepClock(transformers.TrainerCallback):
        """Each logged step's loss, gradient norm and throughput; evaluation time is not step time."""

        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self.last = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            logs = logs or {}
            if "loss" in logs:
                now = time.perf_counter()
                elapsed, self.last = now - self.last, now
                tokens, trainer.pending = trainer.pending, 0
                logged.append({"step": state.global_step, "time": time.time(), "loss": float(logs["loss"]),
                               "grad_norm": float(logs.get("grad_norm", "nan")), "tokens_per_s": tokens / elapsed if elapsed > 0 else None})
            if "eval_loss" in logs:
                self.last = time.perf_counter()

    tokenizer_key = "processing_class" if "processing_class" in inspect.signature(SFTTrainer.__init__).parameters else "tokenizer"
    trainer = Trainer(
        model=model, args=SFTConfig(**settings), train_dataset=datasets.Dataset.from_dict(train_set),
        eval_dataset=datasets.Dataset.from_dict(valid_set) if valid_set else None,
        data_collator=_pad_collator(tokenizer.pad_token_id, torch), callbacks=[StepClock()], **{tokenizer_key: tokenizer},
    )
    trainer.remove_callback(transformers.PrinterCallback)
    begin = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - begin
    result = {
        "steps": trainer.state.global_step,
        "train_rows": len(train_set["input_ids"]),
        "train_tokens": trainer.tokens,
        "wall_time_s": round(wall, 3),
        "tokens_per_s": round(trainer.tokens / wall, 1),
        "final_loss": logged[-1]["loss"] if logged else None,
        "final_grad_norm": logged[-1]["grad_norm"] if logged else None,
        "grad_norms": [row["grad_norm"] for row in logged],
        "step_tokens_per_s": [row["tokens_per_s"] for row in logged],
        "process_start": started,
        "first_step_time": logged[0]["time"] if logged else None,
        "precision": precision,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _tokenize(path: Path, tokenizer: Any, max_seq_len: int) -> dict[str, list[list[int]]]:
    """prompt/completion rows: loss on the completion (and its end-of-sequence token) only."""
    ids_out, labels_out = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        prompt = tokenizer(row["prompt"])["input_ids"]
        completion = tokenizer(row["completion"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids = (prompt + completion)[:max_seq_len]
        labels = ([IGNORE_INDEX] * len(prompt) + completion)[:max_seq_len]
        if all(label == IGNORE_INDEX for label in labels):
            continue  # nothing left to learn from after truncation
        ids_out.append(ids)
        labels_out.append(labels)
    return {"input_ids": ids_out, "labels": labels_out}


def _pad_collator(pad_id: int, torch: Any) -> Any:
    def collate(features: list[dict[str, list[int]]]) -> dict[str, Any]:
        longest = max(len(f["input_ids"]) for f in features)
        pads = [longest - len(f["input_ids"]) for f in features]
        return {
            "input_ids": torch.tensor([list(f["input_ids"]) + [pad_id] * n for f, n in zip(features, pads)]),
            "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * n for f, n in zip(features, pads)]),
            "labels": torch.tensor([list(f["labels"]) + [IGNORE_INDEX] * n for f, n in zip(features, pads)]),
        }

    return collate


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model directory in Hugging Face format")
    parser.add_argument("--train", type=Path, required=True, help="prompt/completion JSONL")
    parser.add_argument("--valid", type=Path)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--warmup-ratio", type=float, default=0.05)
    parser.add_argument("--max-seq-len", type=int, default=96)
    parser.add_argument("--eval-every-percent", type=float, default=10)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the backward pass")
    parser.add_argument("--work-dir", type=Path, default=Path("bare-trl-output"), help="the trainer's output_dir (nothing is saved)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the result JSON")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
