"""What of a run config the `mlx` engine cannot honour. Free of MLX imports, so preflight can tell
before the run's environment exists."""

from __future__ import annotations

from runner.config import RunConfig

BACKENDS = ("local",)  # MLX trains on a Mac's own GPU, which containers and clusters do not have


def unsupported(config: RunConfig) -> list[str]:
    """Each setting the engine would otherwise have to ignore, with how to fix it."""
    r, d = config.resources, config.distributed
    found = []
    if r.nodes > 1 or r.processes_per_node > 1:
        found.append(f"resources.nodes={r.nodes} x processes_per_node={r.processes_per_node}: it trains in one process "
                     "(set both to 1; for several GPUs use engine: hf on a CUDA stack)")
    if r.gpus_per_node:
        found.append(f"resources.gpus_per_node={r.gpus_per_node}: MLX uses the Mac's own GPU, not a CUDA count (set it to 0)")
    for key, value, default in (("strategy", d.strategy, "ddp"), ("backend", d.backend, "auto"), ("tensor_parallel", d.tensor_parallel, 1),
                                ("port", d.port, None), ("env", d.env, {})):
        if value != default:
            found.append(f"distributed.{key}={value}: an MLX run has no process group (remove it)")
    if config.train.deterministic:
        found.append("train.deterministic: MLX has no such switch; its runs repeat from the seed as they are (remove it)")
    return found
