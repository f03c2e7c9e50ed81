"""The MLX engine's arithmetic: which rows each step trains on, the masked loss, one optimizer step
(accumulation, clipping, update) and evaluation.

Everything a step consumes is a function of the config and the step number: the rows come from
a per-epoch permutation seeded by (seed, epoch), and the random state (LoRA dropout) is reseeded
from (seed, step). So a checkpoint needs only the adapter, the optimizer state and the step to
continue exactly as an uninterrupted run would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map

from runner.training import data


class Batches:
    """Micro-batches of one split in the order training reads them; micro-batch k is the same in every attempt."""

    def __init__(self, split: data.Tokenized, batch_size: int, seed: int) -> None:
        self.split = split
        self.batch_size = batch_size
        self.seed = seed
        self.per_epoch = math.ceil(len(split.input_ids) / batch_size)
        self._orders: dict[int, np.ndarray] = {}

    def rows(self, index: int) -> np.ndarray:
        epoch, position = divmod(index, self.per_epoch)
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.split.input_ids))}
        return self._orders[epoch][position * self.batch_size : (position + 1) * self.batch_size]

    def epoch(self, micro_batches_done: int) -> float:
        return micro_batches_done / self.per_epoch


@dataclass(frozen=True)
class Batch:
    inputs: Any  # token ids, right-padded
    targets: Any  # next-token labels, IGNORE_INDEX where no loss is taken
    tokens: int  # non-padding tokens (the throughput count, as the hf engine's attention mask gives it)


def make_batch(split: data.Tokenized, rows: np.ndarray, pad_id: int) -> Batch:
    longest = max(len(split.input_ids[r]) for r in rows)
    ids = np.full((len(rows), longest), pad_id, np.int32)
    labels = np.full((len(rows), longest), data.IGNORE_INDEX, np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(split.input_ids[r])] = split.input_ids[r]
        labels[i, : len(split.labels[r])] = split.labels[r]
    # Right padding under a causal mask cannot change the real tokens' outputs, so no attention mask is needed.
    return Batch(mx.array(ids[:, :-1]), mx.array(labels[:, 1:]), sum(len(split.input_ids[r]) for r in rows))


def loss_sum(model: Any, inputs: Any, targets: Any) -> tuple[Any, Any]:
    """The summed cross-entropy over the label tokens, and how many there are."""
    logits = model(inputs).astype(mx.float32)
    mask = targets != data.IGNORE_INDEX
    losses = nn.losses.cross_entropy(logits, mx.where(mask, targets, 0)) * mask
    return losses.sum(), mask.sum()


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean over the step's label tokens
    grad_norm: float  # before clipping
    tokens: int


def make_optimizer(config: Any) -> Any:
    # torch's AdamW (what the hf engine uses) corrects the moments' bias; MLX's does not by default.
    return optim.AdamW(learning_rate=config.train.learning_rate, weight_decay=config.train.weight_decay, bias_correction=True)


def train_step(model: Any, optimizer: Any, batches: list[Batch], learning_rate: float, max_grad_norm: float) -> StepResult:
    """One optimizer step over `batches` (the accumulated micro-batches): the gradient of the mean loss
    over all their label tokens, clipped, then AdamW."""
    value_and_grad = nn.value_and_grad(model, loss_sum)
    total_loss, total_labels, grads = mx.array(0.0), mx.array(0), None
    for batch in batches:
        (loss, labels), step_grads = value_and_grad(model, batch.inputs, batch.targets)
        grads = step_grads if grads is None else tree_map(mx.add, grads, step_grads)
        total_loss, total_labels = total_loss + loss, total_labels + labels
        mx.eval(grads, total_loss, total_labels)  # bounds memory to one micro-batch's graph
    labels = mx.maximum(total_labels, 1)
    grads = tree_map(lambda g: g / labels, grads)
    grads, norm = optim.clip_grad_norm(grads, max_grad_norm)
    optimizer.learning_rate = mx.array(learning_rate)
    optimizer.update(model, grads)
    mx.eval(model.parameters(), optimizer.state, norm)
    return StepResult(loss=(total_loss / labels).item(), grad_norm=norm.item(), tokens=sum(b.tokens for b in batches))


def evaluate(model: Any, split: data.Tokenized, batch_size: int, pad_id: int) -> float:
    """Mean loss over every label token of `split`, in file order."""
    model.eval()
    total, labels = mx.array(0.0), mx.array(0)
    for start in range(0, len(split.input_ids), batch_size):
        batch = make_batch(split, np.arange(start, min(start + batch_size, len(split.input_ids))), pad_id)
        loss, count = loss_sum(model, batch.inputs, batch.targets)
        total, labels = total + loss, labels + count
        mx.eval(total, labels)
    model.train()
    return (total / mx.maximum(labels, 1)).item()


def seed_step(seed: int, step: int) -> None:
    """The random state of step `step` (LoRA dropout), the same in every attempt."""
    mx.random.seed((seed * 1_000_003 + step) % 2**63)
