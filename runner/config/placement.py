"""The config sections that say where a run executes and how big it is: resources, distributed, slurm, modal.

They change where and how the same training runs, not what it computes, except for the world
size (nodes x processes per node), which changes the effective batch and so the trajectory.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

# A duration: "90m", "6h", "1d12h", or Slurm's "06:00:00" / "1-12:00:00"; a bare number is seconds
# (YAML reads an unquoted 06:00:00 as the number 21600, which is those seconds).
Duration = typing.NewType("Duration", str)
ContainerRuntime = Literal["apptainer", "charliecloud", "podman", "none"]
DistributedBackend = Literal["auto", "nccl", "gloo"]
Strategy = Literal["ddp", "fsdp"]

TIME_LIMIT_EXAMPLES = "e.g. 90m, 6h, 1d12h, 06:00:00 or 1-12:00:00"


@dataclass(frozen=True, kw_only=True)
class ResourcesConfig:
    nodes: int = 1
    processes_per_node: int = 1  # one per GPU on GPU machines; torchrun starts them
    gpus_per_node: int = 0
    gpu_type: str | None = None  # Modal's names (H100, A100-80GB, L4, A10...); a Slurm GRES type
    cpus_per_process: int = 4
    memory_gb: int | None = None  # per node; None: the backend's default
    time_limit: Duration | None = None  # per attempt; None: the partition's default on Slurm, the maximum on Modal

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node

    @property
    def cpus_per_node(self) -> int:
        return self.processes_per_node * self.cpus_per_process

    @property
    def time_limit_s(self) -> int | None:
        return None if self.time_limit is None else parse_duration(self.time_limit)


@dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    strategy: Strategy = "ddp"  # fsdp shards the model's weights over the processes (models too large for one GPU)
    backend: DistributedBackend = "auto"  # auto: nccl with GPUs, gloo without
    tensor_parallel: int = 1
    port: int | None = None  # rendezvous port on the first node; None: derived from the job id
    env: dict[str, str] = field(default_factory=dict)  # e.g. NCCL_DEBUG: WARN, NCCL_IB_DISABLE: "0"


@dataclass(frozen=True, kw_only=True)
class SlurmConfig:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    container: ContainerRuntime = "apptainer"
    container_on_nodes: bool = False  # the runtime is only on the compute nodes (e.g. `module load` in setup): not looked for here
    image: str | None = None  # a .sif file (apptainer, charliecloud) or an image reference (podman); default: the stack's
    python: str | None = None  # the interpreter with lockstep installed, for container: none
    max_requeues: int = 3  # how often a job that reached its time limit requeues itself
    notice_seconds: int = 300  # the time-limit notice (SIGUSR2) comes this long before the end
    setup: tuple[str, ...] = ()  # shell lines run first, e.g. "module load cuda/12.1"
    sbatch_args: tuple[str, ...] = ()  # further sbatch options, e.g. --mail-type=END
    binds: tuple[str, ...] = ()  # further host paths the container sees (SRC or SRC:DEST)


@dataclass(frozen=True, kw_only=True)
class ModalConfig:
    app_name: str = "lockstep"
    volume: str = "lockstep-runs"  # holds data, checkpoints and outputs between attempts
    secrets: tuple[str, ...] = ()  # Modal secret names, e.g. huggingface-secret (values never printed)
    retries: int = 3
    retry_backoff: float = 2.0
    retry_initial_delay_s: float = 10.0
    detach: bool = True  # the job outlives the client that started it


NAME = re.compile(r"^[A-Za-z0-9_.,:@+=-]+$")  # Slurm names: passed as single tokens

RANGES: dict[tuple[str, str], tuple[typing.Callable[[Any], bool], str]] = {
    ("resources", "nodes"): (lambda v: v >= 1, "at least 1"),
    ("resources", "processes_per_node"): (lambda v: v >= 1, "at least 1"),
    ("resources", "gpus_per_node"): (lambda v: v >= 0, "at least 0"),
    ("resources", "cpus_per_process"): (lambda v: v >= 1, "at least 1"),
    ("resources", "memory_gb"): (lambda v: v >= 1, "at least 1"),
    ("resources", "time_limit"): (lambda v: _duration_or_none(v) is not None, f"a duration, {TIME_LIMIT_EXAMPLES}"),
    ("distributed", "tensor_parallel"): (lambda v: v >= 1, "at least 1"),
    ("distributed", "port"): (lambda v: 1024 <= v <= 65535, "in 1024..65535"),
    ("slurm", "partition"): (lambda v: bool(NAME.match(v)), "a Slurm name (letters, digits, _ . , : @ + = -)"),
    ("slurm", "account"): (lambda v: bool(NAME.match(v)), "a Slurm name (letters, digits, _ . , : @ + = -)"),
    ("slurm", "qos"): (lambda v: bool(NAME.match(v)), "a Slurm name (letters, digits, _ . , : @ + = -)"),
    ("slurm", "max_requeues"): (lambda v: v >= 0, "at least 0"),
    ("slurm", "notice_seconds"): (lambda v: 10 <= v <= 65535, "in 10..65535 (Slurm's limit)"),
    ("modal", "retries"): (lambda v: v >= 0, "at least 0"),
    ("modal", "retry_backoff"): (lambda v: v >= 1, "at least 1"),
    ("modal", "retry_initial_delay_s"): (lambda v: v >= 0, "at least 0"),
}

# Changing these cannot alter what a resumed run computes (where it runs, how long an attempt may take).
RESUME_SAFE_SECTIONS = ("slurm", "modal")
RESUME_SAFE_KEYS = frozenset(
    {"resources.gpu_type", "resources.cpus_per_process", "resources.memory_gb", "resources.time_limit",
     "distributed.port", "distributed.env", "distributed.backend",
     "distributed.strategy"}  # FSDP checkpoints hold whole tensors, the same files as DDP's
)

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_UNIT_TEXT = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_CLOCK_TEXT = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_duration(text: str) -> int:
    """Seconds in `text`: unit form (90m, 6h, 1d12h) or Slurm's clock form (MM, HH:MM:SS, D-HH:MM:SS)."""
    seconds = _duration_or_none(text)
    if seconds is None:
        raise ValueError(f"not a duration: {text!r} ({TIME_LIMIT_EXAMPLES})")
    return seconds


def slurm_time(seconds: int) -> str:
    """Slurm's D-HH:MM:SS, rounded up to whole minutes (Slurm's resolution)."""
    minutes = -(-seconds // 60)
    days, minutes = divmod(minutes, 1440)
    return f"{days}-{minutes // 60:02d}:{minutes % 60:02d}:00"


def _duration_or_none(text: str) -> int | None:
    text = text.strip().lower()
    unit = _UNIT_TEXT.match(text)
    if unit and any(unit.groups()):
        total = sum(int(value) * _UNITS[name] for value, name in zip(unit.groups(), "dhms") if value)
        return total or None
    clock = _CLOCK_TEXT.match(text)
    if clock is None:
        return None
    days, first, second, third = clock.groups()
    if second is None and days is None:  # Slurm reads a lone number as minutes
        total = int(first) * 60
    elif third is None and days is None:  # MM:SS
        total = int(first) * 60 + int(second)
    else:  # HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
        total = int(first) * 3600 + int(second or 0) * 60 + int(third or 0) + int(days or 0) * 86400
    return total or None


def resume_safe(key: str) -> bool:
    section = key.split(".", 1)[0]
    return section in RESUME_SAFE_SECTIONS or key in RESUME_SAFE_KEYS or key.startswith("distributed.env.")
