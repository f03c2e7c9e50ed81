"""Settings that fit the hardware: per-device batch size, gradient accumulation (keeping the
effective batch), max_seq_len, gradient checkpointing and 4-bit weights, from the memory estimate.

Preference order, cheapest first: no change to the model or the compute (a larger batch with less
accumulation when memory allows), then gradient checkpointing (about a third more compute, same
result), then 4-bit weights (QLoRA: a different, slightly lossy model), then a shorter
max_seq_len (cuts rows). Checkpointing and 4-bit are taken only when the cheaper settings cannot fit
a useful batch (GOOD_BATCH); max_seq_len is shortened only when nothing fits at all, and raised for
long rows never past the most tokens the model reads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from runner.config import RunConfig
from runner.preflight.hardware import Hardware
from runner.preflight.memory import Estimate, ModelShape, estimate

GOOD_BATCH = 4  # a per-device batch below this leaves a GPU underused; gradient checkpointing pays for a larger one
MIN_SEQ_LEN = 128
SEQ_STEP = 64


@dataclass(frozen=True, kw_only=True)
class Settings:
    per_device_batch_size: int
    gradient_accumulation: int
    max_seq_len: int
    gradient_checkpointing: bool
    quantization: str

    @classmethod
    def of(cls, config: RunConfig) -> Settings:
        train = config.train
        return cls(per_device_batch_size=train.per_device_batch_size, gradient_accumulation=train.gradient_accumulation,
                   max_seq_len=train.max_seq_len, gradient_checkpointing=train.gradient_checkpointing, quantization=config.quantization)

    def as_config(self) -> dict[str, Any]:
        """The dotted config keys these settings set."""
        return {("quantization" if key == "quantization" else f"train.{key}"): value for key, value in asdict(self).items()}


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    settings: Settings
    estimate: Estimate
    budget_bytes: int
    fits: bool
    reason: str

    def changes(self, config: RunConfig) -> dict[str, tuple[Any, Any]]:
        """key -> (configured, recommended) for each value that differs."""
        before = Settings.of(config).as_config()
        return {key: (before[key], value) for key, value in self.settings.as_config().items() if before[key] != value}


def estimate_for(config: RunConfig, shape: ModelShape, settings: Settings, hardware: Hardware, prequantized: str | None = None,
                 longest_row: int | None = None) -> Estimate:
    """The memory one training process needs with `settings` on `hardware`. Batches are padded to
    their longest row, so with the data's longest row known, no batch is longer than that."""
    cpu = hardware.accelerator == "cpu"
    seq_len = min(settings.max_seq_len, longest_row or settings.max_seq_len)
    if settings.quantization == "4bit" or prequantized == "4bit":
        weights = "4bit"
    elif prequantized == "8bit":
        weights = "8bit"
    else:
        weights = "fp32" if cpu else ("bf16" if hardware.bf16 else "fp16")
    result = estimate(shape, weights=weights, compute_bytes=4 if cpu else 2, lora_rank=config.lora.r,
                      batch=settings.per_device_batch_size, seq_len=seq_len,
                      gradient_checkpointing=settings.gradient_checkpointing, overhead_bytes=hardware.overhead_bytes,
                      lora_dropout=config.lora.dropout > 0, device="cpu" if cpu else "cuda")
    if config.distributed.strategy == "fsdp":  # each process holds 1/world of the frozen weights
        result = replace(result, weights=result.weights / config.resources.world_size)
    return result


def recommend(config: RunConfig, shape: ModelShape, hardware: Hardware, token_stats: dict[str, Any] | None = None,
              prequantized: str | None = None) -> Recommendation:
    configured = Settings.of(config)
    budget = hardware.budget_bytes
    effective = configured.per_device_batch_size * configured.gradient_accumulation
    options = [(configured.quantization, False), (configured.quantization, True)]
    if configured.quantization == "none" and hardware.accelerator != "cpu" and prequantized is None:
        options += [("4bit", False), ("4bit", True)]  # bitsandbytes (CUDA) or MLX quantized weights; not on CPU
    longest = token_stats["max"] if token_stats else None
    for seq_len, seq_reason in _seq_len_candidates(configured.max_seq_len, token_stats):
        best: Settings | None = None
        for quantization, checkpointing in options:
            base = Settings(per_device_batch_size=1, gradient_accumulation=effective, max_seq_len=seq_len,
                            gradient_checkpointing=checkpointing, quantization=quantization)
            batch = _largest_fitting_batch(config, shape, hardware, effective, budget, prequantized, longest, base)
            if batch is not None and (best is None or batch > best.per_device_batch_size):
                best = replace(base, per_device_batch_size=batch, gradient_accumulation=effective // batch)
            if batch is not None and batch >= min(effective, GOOD_BATCH):
                break
        if best is not None:  # the longest max_seq_len that fits at all: cutting rows is the last resort
            return Recommendation(settings=best, estimate=estimate_for(config, shape, best, hardware, prequantized, longest),
                                  budget_bytes=budget, fits=True, reason=_reason(configured, best, hardware, seq_reason))
    smallest = Settings(per_device_batch_size=1, gradient_accumulation=effective, max_seq_len=MIN_SEQ_LEN, gradient_checkpointing=True,
                        quantization=options[-1][0])
    result = estimate_for(config, shape, smallest, hardware, prequantized, longest)
    return Recommendation(settings=smallest, estimate=result, budget_bytes=budget, fits=False,
                          reason=f"does not fit {hardware.name}: even batch 1, max_seq_len {MIN_SEQ_LEN}, gradient checkpointing"
                                 f"{' and 4-bit weights' if smallest.quantization == '4bit' else ''} need "
                                 f"{result.total / 2**30:.1f} GiB of {budget / 2**30:.1f} GiB usable; use a larger device or a smaller model")


def _seq_len_candidates(configured: int, stats: dict[str, Any] | None) -> list[tuple[int, str]]:
    """max_seq_len values to try, in order: as the data needs it (_data_seq_len), then halved from the
    longest row's length down to MIN_SEQ_LEN (cutting rows)."""
    first, reason = _data_seq_len(configured, stats)
    candidates = [(first, reason)]
    seq_len = min(first, _round_up(stats["max"])) if stats else first  # halving below this cuts rows
    while seq_len > MIN_SEQ_LEN:
        seq_len = max(MIN_SEQ_LEN, seq_len // 2)
        candidates.append((seq_len, f"max_seq_len halved to {seq_len}: nothing longer fits a useful batch; longer rows are cut"))
    return candidates


def _data_seq_len(configured: int, stats: dict[str, Any] | None) -> tuple[int, str]:
    """max_seq_len as configured, or longer where over 1% of rows would be cut, but never past the most tokens the model
    reads (the token statistics' max_positions): a longer max_seq_len cannot keep rows whole that the model cannot read."""
    if not stats or stats["truncated_share"] <= 0.01:
        return configured, ""
    wanted, positions = _round_up(stats["p99"]), stats.get("max_positions")
    cut = f"{stats['truncated_share']:.0%} are cut at {configured}"
    if positions is None or wanted <= positions:
        return wanted, f"max_seq_len {wanted} keeps 99% of rows whole ({cut})"
    if configured >= positions:
        return configured, ""
    return positions, (f"max_seq_len {positions}, the model's limit ({cut}): the model reads at most {positions} tokens; "
                       "rows longer are cut: shorten or split them")


def _round_up(tokens: int) -> int:
    return max(SEQ_STEP, math.ceil(tokens / SEQ_STEP) * SEQ_STEP)


def _largest_fitting_batch(config: RunConfig, shape: ModelShape, hardware: Hardware, effective: int, budget: int,
                           prequantized: str | None, longest: int | None, base: Settings) -> int | None:
    """The largest divisor of the effective batch that fits (so accumulation keeps it exact)."""
    for batch in sorted((d for d in range(1, effective + 1) if effective % d == 0), reverse=True):
        if estimate_for(config, shape, replace(base, per_device_batch_size=batch), hardware, prequantized, longest).total <= budget:
            return batch
    return None


def _reason(before: Settings, after: Settings, hardware: Hardware, seq_reason: str) -> str:
    if before == after:
        return f"the configured settings fit {hardware.name} as they are"
    notes = [seq_reason] if seq_reason else []
    if after.per_device_batch_size != before.per_device_batch_size:
        effective = after.per_device_batch_size * after.gradient_accumulation
        notes.append(f"batch {after.per_device_batch_size} x accumulation {after.gradient_accumulation} keeps the effective batch of {effective} per device")
    if after.gradient_checkpointing and not before.gradient_checkpointing:
        notes.append("gradient checkpointing trades about a third more compute for far less activation memory")
    if after.quantization == "4bit" and before.quantization != "4bit":
        notes.append("4-bit weights (QLoRA) are needed to fit the model")
    return "; ".join(notes) or f"fits {hardware.name}"
