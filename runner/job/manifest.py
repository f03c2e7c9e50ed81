"""The environment fingerprint of a run attempt: which code, packages and machine produced it."""

from __future__ import annotations

import getpass
import importlib.metadata
import os
import platform
import socket
import sys
from datetime import datetime, timezone
from typing import Any

import runner
from runner import SOURCE_DIR
from runner.config import RunConfig
from runner.training.data import resolve_path
from runner.util.gitinfo import git
from runner.util.hashing import file_sha256

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "bitsandbytes", "unsloth", "mlx", "mlx-lm")
REPO_ROOT = SOURCE_DIR
# Where a scheduler ran the attempt: its job id, restart count and nodes (set by Slurm, or by lockstep's job).
SCHEDULER_VARS = ("LOCKSTEP_SUBMISSION", "SLURM_JOB_ID", "SLURM_RESTART_COUNT", "SLURM_JOB_NODELIST", "SLURM_JOB_PARTITION",
                  "SLURM_CLUSTER_NAME", "MODAL_TASK_ID")


def collect(config: RunConfig, backend: str, environment: dict[str, Any], data_hashes: dict[str, str]) -> dict[str, Any]:
    """`environment` is runner.stacks.environment.describe() (stack, lock hash, drift); `data_hashes` is data_sha256(config)."""
    return {
        "lockstep_version": runner.__version__,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backend": backend,
        "host": socket.gethostname(),
        "user": _user(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in PACKAGES if _version(name)},
        "cuda": _cuda(),
        "stack": environment["stack"],
        "lock_sha256": environment["lock_sha256"],
        "drift": environment["drift"],
        "git": _git(),
        "image": _image(),
        "scheduler": {name: os.environ[name] for name in SCHEDULER_VARS if name in os.environ},
        "config_sha256": config.sha256(),
        "data_sha256": data_hashes,
    }


def data_sha256(config: RunConfig) -> dict[str, str]:
    """The sha256 of each data file: a resumed run must notice data changed under the same path."""
    refs = {"train": config.data.train, "valid": config.data.valid}
    return {split: file_sha256(resolve_path(ref)) for split, ref in refs.items() if ref}



def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cuda() -> dict[str, Any] | None:
    if "torch" not in sys.modules and _version("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return {"available": False, "torch_cuda": torch.version.cuda}
    return {
        "available": True,
        "torch_cuda": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }


def _git() -> dict[str, Any] | None:
    """The commit of the lockstep checkout that ran, and whether it had local changes."""
    commit = git(REPO_ROOT, "rev-parse", "HEAD")
    if commit is None:  # an image holds no checkout; it was labelled with the commit it was built from
        built_from = os.environ.get("LOCKSTEP_GIT_COMMIT")
        return {"commit": built_from.removesuffix("-dirty"), "dirty": built_from.endswith("-dirty")} if built_from else None
    return {"commit": commit, "dirty": bool(git(REPO_ROOT, "status", "--porcelain", "--untracked-files=no"))}


def _image() -> dict[str, str] | None:
    """The container image the run executes in, as the container backend started it."""
    if not os.environ.get("LOCKSTEP_IMAGE"):
        return None
    image = {"ref": os.environ["LOCKSTEP_IMAGE"], "id": os.environ.get("LOCKSTEP_IMAGE_ID", "")}
    runtime = os.environ.get("LOCKSTEP_CONTAINER_RUNTIME")  # set where the image is not a docker/podman one (a SIF)
    return {**image, "runtime": runtime} if runtime else image


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
