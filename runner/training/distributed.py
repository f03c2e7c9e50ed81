"""Multi-process runs (torchrun, accelerate launch): which process this is, and waiting for the others.

Rank 0 owns the run directory (config, manifest, metrics, reports, checkpoint commits); the
other ranks read it only after rank 0 has prepared it. Single-process runs never import
torch.distributed here.
"""

from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier(backend: str = "auto") -> None:
    """Wait until every rank gets here; starts the process group if the trainer has not yet
    (`backend` auto: nccl with GPUs, gloo without)."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=("nccl" if cuda else "gloo") if backend == "auto" else backend)
    dist.barrier()


def any_rank(*flags: bool, device: object = "cpu") -> tuple[bool, ...]:
    """Each flag made true on every rank if it is true on any: decisions that lead into
    collective operations (like a checkpoint's barriers) must be the same everywhere."""
    if world_size() <= 1:
        return flags
    import torch
    import torch.distributed as dist

    votes = torch.tensor([int(flag) for flag in flags], device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return tuple(bool(vote) for vote in votes.tolist())
