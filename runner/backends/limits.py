"""Platform limits, checked before anything is submitted: pure functions of the config (and, for
Slurm, of the partition's own limits), each problem with the fix in its message.

The numbers live in runner/tables/platform_limits.toml with their source and the date they were read.
"""

from __future__ import annotations

import tomllib
from functools import cache
from typing import Any

from runner import PACKAGE_DIR
from runner.config import RunConfig
from runner.config.placement import ResourcesConfig, parse_duration, slurm_time
from runner.problems import Check, Status

LIMITS_FILE = PACKAGE_DIR / "tables" / "platform_limits.toml"


NAME = "limits"  # preflight's line for every finding here; never waivable (the platform would refuse the job anyway)


def problem(*, summary: str, fix: str, status: Status = "error") -> Check:
    """One thing the platform would refuse (an error) or waste (a warning), with what to change."""
    return Check(name=NAME, status=status, summary=summary, fix=fix)


@cache
def table() -> dict[str, Any]:
    return tomllib.loads(LIMITS_FILE.read_text())


def modal_preemption_grace_s() -> float:
    """Seconds between Modal's preemption signal and the kill."""
    return float(table()["modal"]["preemption_grace_s"]["seconds"])


def container_stop_grace_s() -> float:
    """Seconds between `docker stop`'s (and podman's) SIGTERM and its SIGKILL, unless --time says otherwise."""
    return float(table()["docker"]["stop_grace_s"]["seconds"])


def slurm_default_kill_wait_s() -> float:
    """Slurm's KillWait where the cluster's own cannot be read: seconds between SIGTERM and SIGKILL."""
    return float(table()["slurm"]["kill_wait_s"]["default"])


def common(config: RunConfig, backend: str) -> list[Check]:
    """What every backend requires: a consistent world size and process layout."""
    res, problems = config.resources, []
    tp = config.distributed.tensor_parallel
    if res.world_size % tp:
        problems.append(problem(
            summary=f"tensor_parallel {tp} does not divide the world size {res.world_size} ({res.nodes} node(s) x {res.processes_per_node} processes)",
            fix=f"tensor parallel x data parallel must equal the world size: use a tensor_parallel that divides {res.world_size}, or change nodes/processes_per_node",
        ))
    elif tp > 1:
        problems.append(problem(
            summary=f"tensor_parallel {tp}: lockstep's engines train data-parallel only (DDP over {res.world_size} processes)",
            fix="set distributed.tensor_parallel=1; a model too large for one GPU needs 4-bit quantization (quantization: 4bit) or larger GPUs",
        ))
    if res.gpu_type and res.gpus_per_node == 0:
        problems.append(problem(summary=f"gpu_type {res.gpu_type} is set but gpus_per_node is 0",
                                fix="set resources.gpus_per_node (or remove gpu_type for a CPU run)"))
    if res.gpus_per_node and res.processes_per_node > res.gpus_per_node:
        problems.append(problem(
            summary=f"{res.processes_per_node} processes per node but {res.gpus_per_node} GPU(s) per node",
            fix=f"run one process per GPU: resources.processes_per_node={res.gpus_per_node}",
        ))
    elif res.gpus_per_node > res.processes_per_node:
        problems.append(problem(
            status="warning",
            summary=f"{res.gpus_per_node} GPUs per node but {res.processes_per_node} process(es): {res.gpus_per_node - res.processes_per_node} GPU(s) would sit idle",
            fix=f"set resources.processes_per_node={res.gpus_per_node} to train on all of them",
        ))
    if config.distributed.strategy == "fsdp" and config.quantization == "4bit":
        problems.append(problem(summary="distributed.strategy fsdp with quantization 4bit is not supported",
                                fix="use distributed.strategy=ddp for 4-bit (QLoRA) runs, or quantization=none with fsdp"))
    if config.distributed.strategy == "fsdp" and res.world_size == 1:
        problems.append(problem(status="warning", summary="distributed.strategy fsdp with one process shards nothing",
                                fix="set resources.processes_per_node (or nodes) above 1, or use ddp"))
    if backend in ("local", "docker") and res.nodes > 1:
        problems.append(problem(summary=f"{res.nodes} nodes asked, but --backend {backend} runs on this machine only",
                                fix="use --backend slurm or --backend modal for several nodes, or set resources.nodes=1"))
    return problems


def modal(config: RunConfig) -> list[Check]:
    """Modal's limits: GPUs per container, GPU names, timeout per attempt, retries, clusters."""
    limits, res, problems = table()["modal"], config.resources, []
    gpu = res.gpu_type or "H100"
    if res.gpus_per_node and res.gpu_type is None:
        problems.append(problem(summary=f"{res.gpus_per_node} GPU(s) per node asked with no gpu_type",
                                fix=f"set resources.gpu_type to one of {', '.join(limits['gpu_types']['names'])}"))
    elif res.gpu_type and res.gpu_type not in limits["gpu_types"]["names"]:
        problems.append(problem(summary=f"Modal has no GPU type {res.gpu_type!r}",
                                fix=f"use one of {', '.join(limits['gpu_types']['names'])}"))
    per_container = limits["gpus_per_container"]["by_type"].get(gpu, limits["gpus_per_container"]["max"])
    cluster = limits["cluster"]
    if res.gpus_per_node > per_container:
        total = res.world_size if res.gpus_per_node == res.processes_per_node else res.nodes * res.gpus_per_node
        nodes_needed = -(-total // per_container)
        problems.append(problem(
            summary=f"{gpu}:{res.gpus_per_node} exceeds Modal's {per_container} GPUs per container",
            fix=f"use {gpu}:{per_container} (resources.gpus_per_node={per_container}), or a cluster of {nodes_needed} nodes"
                f" of {per_container} GPUs (resources.nodes={nodes_needed}, gpus_per_node={per_container}; a cluster takes every GPU of its nodes)",
        ))
    if res.nodes > 1:
        problems += _modal_cluster(res, gpu, per_container, cluster)
    timeout = limits["timeout_s"]
    if res.time_limit is not None and not timeout["min"] <= res.time_limit_s <= timeout["max"]:
        hours = timeout["max"] // 3600
        problems.append(problem(
            summary=f"time_limit {res.time_limit} ({res.time_limit_s} s) exceeds Modal's {hours} h per attempt",
            fix=f"set resources.time_limit to at most {hours}h: checkpoints and modal.retries carry a longer run across attempts",
        ))
    retries = limits["retries"]["max"]
    if config.modal.retries > retries:
        problems.append(problem(summary=f"modal.retries {config.modal.retries} exceeds Modal's {retries}",
                                fix=f"set modal.retries to at most {retries}"))
    return problems


def _modal_cluster(res: ResourcesConfig, gpu: str, per_container: int, cluster: dict[str, Any]) -> list[Check]:
    problems = []
    if res.gpus_per_node == 0:
        problems.append(problem(summary=f"{res.nodes} nodes without GPUs: Modal has no CPU-only clusters",
                                fix="set resources.gpus_per_node (a cluster takes every GPU of its nodes), or resources.nodes=1"))
    elif res.gpus_per_node != per_container:
        problems.append(problem(
            summary=f"a Modal cluster container must take every GPU of its node ({gpu}:{per_container}), not {res.gpus_per_node}",
            fix=f"set resources.gpus_per_node={per_container} and processes_per_node={per_container}, or run on one node",
        ))
    if res.nodes > cluster["max_nodes"] or res.nodes * res.gpus_per_node > cluster["max_gpus"]:
        problems.append(problem(
            summary=f"{res.nodes} nodes x {res.gpus_per_node} GPUs exceeds Modal's clusters ({cluster['max_nodes']} nodes, {cluster['max_gpus']} GPUs)",
            fix=f"use at most {min(cluster['max_nodes'], cluster['max_gpus'] // max(1, res.gpus_per_node))} nodes",
        ))
    return problems


def slurm(config: RunConfig, partition: dict[str, str] | None) -> list[Check]:
    """Slurm's limits: the notice within the time limit, and the partition's own limits when known
    (`partition` is `scontrol show partition --oneliner` parsed into KEY -> VALUE)."""
    res, problems = config.resources, []
    notice = config.slurm.notice_seconds
    if res.time_limit_s is not None and notice >= res.time_limit_s:
        problems.append(problem(
            summary=f"the time-limit notice ({notice} s before the end) is not shorter than the time limit ({res.time_limit})",
            fix="lower slurm.notice_seconds or raise resources.time_limit",
        ))
    if partition is None:
        return problems
    name = partition.get("PartitionName", "?")
    if partition.get("State", "UP") != "UP":
        problems.append(problem(summary=f"partition {name} is {partition['State']}",
                                fix="choose another partition (sinfo lists them) or wait until it is UP"))
    max_nodes = partition.get("MaxNodes", "UNLIMITED")
    total_nodes = partition.get("TotalNodes", "")
    for limit, label in ((max_nodes, "allows at most"), (total_nodes, "has")):
        if limit.isdigit() and res.nodes > int(limit):
            problems.append(problem(summary=f"{res.nodes} nodes asked; partition {name} {label} {limit}",
                                    fix=f"set resources.nodes to at most {limit}, or choose another partition"))
    max_time = partition.get("MaxTime", "UNLIMITED")
    if res.time_limit_s is not None and max_time not in ("UNLIMITED", "INFINITE", ""):
        allowed = parse_duration(max_time)
        if res.time_limit_s > allowed:
            problems.append(problem(
                summary=f"time_limit {res.time_limit} exceeds partition {name}'s MaxTime {max_time}",
                fix=f"set resources.time_limit to at most {slurm_time(allowed)}: the job requeues itself from its checkpoint"
                    " when it reaches the limit (slurm.max_requeues)",
            ))
    return problems
