"""The Modal plan of a run: every setting of the App, its image and its function, as plain data.

Pure (no Modal import, no network): `--dry-run` prints it and the tests compare it with
tests/golden/modal-plan.json. runner.backends.modal_app turns exactly this plan into Modal objects.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from runner import stacks
from runner.backends import paths
from runner.backends.limits import table
from runner.spec import JobSpec
from runner.util.hashing import file_sha256

VOLUME_MOUNT = PurePosixPath("/runs")
DEFAULT_STACK = "cu121-torch251"  # the pinned Modal set (lockfiles/stacks.toml)


def run_path(spec: JobSpec) -> PurePosixPath:
    """Where the run directory lives in the volume: the config's output_dir, made relative."""
    parts = [part for part in Path(spec.config.output_dir).parts if part not in ("/", "..", ".")]
    return VOLUME_MOUNT / PurePosixPath(*parts[-3:]) if parts else VOLUME_MOUNT / "run"


def gpu_spec(spec: JobSpec) -> str | None:
    res = spec.config.resources
    return f"{res.gpu_type}:{res.gpus_per_node}" if res.gpus_per_node else None


def make(spec: JobSpec, stack: stacks.Stack) -> dict[str, Any]:
    config, res = spec.config, spec.config.resources
    run_dir = run_path(spec)
    uploads, remote_config = _inputs(spec, run_dir)
    timeout = res.time_limit_s or table()["modal"]["timeout_s"]["max"]
    return {
        "app": config.modal.app_name,
        "image": {
            "base": "debian_slim",
            "python": stack.python,
            "requirements": str(stack.lock_file),
            "requirements_sha256": file_sha256(stack.lock_file) if stack.lock_file.is_file() else None,
            "extra_index_url": _extra_index(stack),
            "local_python_source": "runner",
            "env": {"LOCKSTEP_STACK": stack.name, **config.distributed.env},
        },
        "function": {
            "gpu": gpu_spec(spec),
            "cpu": float(res.cpus_per_node),
            "memory_mb": res.memory_gb * 1024 if res.memory_gb else None,
            "timeout_s": timeout,
            "retries": {"max_retries": config.modal.retries, "backoff_coefficient": config.modal.retry_backoff,
                        "initial_delay": config.modal.retry_initial_delay_s},
            "volumes": {str(VOLUME_MOUNT): config.modal.volume},
            "secrets": list(config.modal.secrets),
            "cluster_size": res.nodes if res.nodes > 1 else None,
        },
        "call": {
            "config": remote_config,
            "run_dir": str(run_dir),
            "nodes": res.nodes,
            "processes_per_node": res.processes_per_node,
            "strict_env": spec.strict_env,
            "submission": spec.submission_id,
        },
        "uploads": uploads,
        "detach": config.modal.detach,
        "fetch_results": ["modal", "volume", "get", config.modal.volume, str(run_dir.relative_to(VOLUME_MOUNT)), str(spec.run_dir)],
    }


def _inputs(spec: JobSpec, run_dir: PurePosixPath) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Local data files and model directories go to the volume beside the run; the config the
    function receives names them there, and names the run directory in the volume."""
    config = spec.config.to_dict()
    uploads = []
    for section, key, local in paths.local_inputs(spec.config, spec.cwd):
        remote = run_dir / "inputs" / local.name
        uploads.append({"local": str(local), "remote": str(remote.relative_to(VOLUME_MOUNT)), "kind": "dir" if local.is_dir() else "file"})
        config[section][key] = str(remote)
    config["output_dir"] = str(run_dir)
    return uploads, config


def _extra_index(stack: stacks.Stack) -> str | None:
    """The stack's project index (PyTorch's, for CUDA builds): Modal's image builders reach it."""
    return stack.extra_index_url
