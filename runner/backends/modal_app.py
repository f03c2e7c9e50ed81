"""The Modal objects of a plan (runner.backends.modal_plan): the App, the image built from the
stack's lock, the training function with its GPUs, timeout, retries, volume and secrets, and the
function's body, which runs in Modal's container and calls the same node launcher as every backend.

The Modal SDK is imported here only; nothing in this module talks to Modal's servers except
`spawn` (in modal_backend) and, inside the container, the volume's reload and commit.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import modal
import yaml

from runner.job import arguments, storage
from runner.rundir import CONFIG_FILE, SUMMARY_FILE

FUNCTION_NAME = "lockstep_train"


def image(plan: dict[str, Any]) -> modal.Image:
    recipe = plan["image"]
    # The lock carries a sha256 for every file: pip installs it in hash-checking mode, nothing else.
    return (
        modal.Image.debian_slim(python_version=recipe["python"])
        .pip_install_from_requirements(recipe["requirements"], extra_index_url=recipe["extra_index_url"])
        .env(recipe["env"])
        .add_local_python_source(recipe["local_python_source"])
    )


def function_options(plan: dict[str, Any], volume: Any, secrets: list[Any], built_image: Any) -> dict[str, Any]:
    """The exact keyword arguments of `app.function(...)`."""
    settings = plan["function"]
    return {
        "image": built_image,
        "gpu": settings["gpu"],
        "cpu": settings["cpu"],
        "memory": settings["memory_mb"],
        "timeout": settings["timeout_s"],
        "retries": modal.Retries(**settings["retries"]),
        "volumes": {mount: volume for mount in settings["volumes"]},
        "secrets": secrets,
        "serialized": True,  # the body is defined here, not in a module Modal would import by path
        "name": FUNCTION_NAME,
    }


def build(plan: dict[str, Any]) -> tuple[modal.App, Any]:
    """The App and its training function, exactly as the plan says."""
    app = modal.App(plan["app"])
    (volume_name,) = plan["function"]["volumes"].values()
    volume = modal.Volume.from_name(volume_name, create_if_missing=True)
    secrets = [modal.Secret.from_name(name) for name in plan["function"]["secrets"]]
    body = remote_train
    if plan["function"]["cluster_size"]:
        body = modal.clustered(size=plan["function"]["cluster_size"])(body)
    function = app.function(**function_options(plan, volume, secrets, image(plan)))(body)
    return app, function


def remote_train(call: dict[str, Any], volume_name: str) -> dict[str, Any]:
    """Runs in Modal's container: the run directory is in the volume, so a retry (a new container)
    reloads it and resumes from the last committed checkpoint."""
    from runner.job import launch

    volume = modal.Volume.from_name(volume_name)
    volume.reload()
    run_dir = Path(call["run_dir"])
    config_file = Path(tempfile.mkdtemp(prefix="lockstep-")) / CONFIG_FILE
    config_file.write_text(yaml.safe_dump(call["config"], sort_keys=False))
    os.environ[storage.HOOK_ENV] = storage.modal_volume(volume_name)  # the job commits it after each checkpoint
    os.environ["LOCKSTEP_SUBMISSION"] = call["submission"]
    node_rank, first_node = 0, None
    if call["nodes"] > 1:
        cluster = modal.experimental.get_cluster_info()
        node_rank, first_node = cluster.rank, cluster.container_ips[0]
    job_args = arguments.entry_arguments(str(config_file), backend="modal", strict_env=call["strict_env"])
    code = launch.run(nnodes=call["nodes"], nproc=call["processes_per_node"], node_rank=node_rank,
                      master_addr=first_node, master_port=launch.DEFAULT_PORT, job_args=job_args)
    volume.commit()
    if code == 75:  # stopped after a checkpoint (preemption): failing the attempt makes Modal retry it
        raise RuntimeError(f"stopped after a checkpoint in {run_dir}; the next attempt resumes from it")
    if code != 0:
        raise RuntimeError(f"training exited with code {code}; its log above says why")
    summary = run_dir / SUMMARY_FILE
    return json.loads(summary.read_text()) if summary.is_file() else {}
