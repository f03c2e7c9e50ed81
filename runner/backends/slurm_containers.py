"""How a Slurm job's step runs in its container: the command each node starts (apptainer exec, ch-run,
podman run, or the site's Python), the SIF it runs and the checks on it, and the host paths bound into it."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import sys
from pathlib import Path

from runner import stacks
from runner.backends import limits, paths
from runner.errors import BackendError
from runner.problems import Check
from runner.spec import JobSpec
from runner.stacks import charliecloud, environment, images, sif, sif_file
from runner.stacks.containers import mount_option
from runner.util import cache, shell
from runner.util.hashing import file_sha256

RUNTIME_COMMANDS = {"apptainer": "apptainer", "charliecloud": "ch-run", "podman": "podman"}


def problems(spec: JobSpec) -> list[Check]:
    """What would stop the job in its container, found before it is submitted."""
    return _runtime_problems(spec) + _image_problems(spec) + _bind_problems(spec)


def _runtime_problems(spec: JobSpec) -> list[Check]:
    """The runtime is looked for on this machine unless the config says it is on the compute nodes only.
    charliecloud's image directory is unpacked here, so unsquashfs is needed here in any case."""
    slurm, found = spec.config.slurm, []
    command = RUNTIME_COMMANDS.get(slurm.container)
    if command and not slurm.container_on_nodes and shutil.which(command) is None:
        found.append(limits.problem(
            summary=f"slurm.container is {slurm.container}, but {command} is not on this machine's PATH",
            fix=f"submit from a machine that has {slurm.container} (a login node), or, where only the compute nodes have it, "
                f"say so with slurm.container_on_nodes: true (and slurm.setup lines such as `module load {slurm.container}`)"))
    if slurm.container == "charliecloud" and spec.config.resources.gpus_per_node and not slurm.container_on_nodes \
            and shutil.which("ch-fromhost") is None:
        found.append(limits.problem(
            summary="a GPU job in charliecloud needs ch-fromhost (it adds the node's GPU driver libraries to the image), "
                    "which is not on this machine's PATH",
            fix="install charliecloud's builders (apt-get install charliecloud-builders), or, where the compute nodes "
                "have it, say so with slurm.container_on_nodes: true"))
    if slurm.container == "charliecloud" and shutil.which("unsquashfs") is None:
        found.append(limits.problem(
            summary="unsquashfs is not on this machine's PATH: charliecloud's image directory is unpacked from the SIF here, before submitting",
            fix="install squashfs-tools on the machine that submits (apt-get install squashfs-tools, dnf install squashfs-tools)"))
    return found


def job_env(spec: JobSpec) -> dict[str, str]:
    """Variables the batch script exports for the container runtime: ch-run needs $USER, which a batch job may lack."""
    return {"USER": getpass.getuser()} if spec.config.slurm.container == "charliecloud" else {}


def before_step(spec: JobSpec) -> tuple[str, ...]:
    """Shell lines the batch script runs on the first node before the step. charliecloud reaches GPUs only
    through the node's driver libraries copied into the image directory (`ch-fromhost --nvidia`), which
    must be the compute node's, so it is done there, on each start of the job."""
    if spec.config.slurm.container != "charliecloud" or not spec.config.resources.gpus_per_node:
        return ()
    image_dir = shell.quote(str(_charliecloud_image_dir(_image(spec))))
    return (f"ch-fromhost --nvidia {image_dir} || {{ event 'exit 1: ch-fromhost --nvidia failed'; "
            "echo 'lockstep: ch-fromhost --nvidia could not add the GPU driver libraries of this node to the image' >&2; exit 1; }",)


def prepare_image(spec: JobSpec) -> None:
    """Before sbatch: for charliecloud, the SIF unpacked for ch-run, with this job's mount points and caches."""
    if spec.config.slurm.container != "charliecloud":
        return
    for directory in (cache.root(), paths.host_hf_home()):
        directory.mkdir(parents=True, exist_ok=True)
    image_dir = charliecloud.unpack(_image(spec))
    charliecloud.add_mount_points(image_dir, [*_charliecloud_paths(spec), *(_bind_target(b) for b in spec.config.slurm.binds)])


def launch_prefix(spec: JobSpec) -> tuple[str, ...]:
    """What runs runner.job.launch on each node: the site's Python, or the stack's image."""
    config, container = spec.config, spec.config.slurm.container
    if container == "none":
        return (config.slurm.python or sys.executable,)
    image = config.slurm.image or str(default_sif(spec))
    if container == "charliecloud":
        return _charliecloud_prefix(spec, Path(image))
    if container == "apptainer":
        binds = [f"--bind={_bind(path)}" for path in _host_paths(spec)] + [f"--bind={_bind(b)}" for b in config.slurm.binds]
        gpu = ["--nv"] if config.resources.gpus_per_node else []
        env = [f"--env={name}={value}" for name, value in {**_image_env(Path(image), "apptainer"), "PYTHONSAFEPATH": "1"}.items()]
        return ("apptainer", "exec", *gpu, *binds, *env, f"--pwd={spec.cwd}", image, images.IMAGE_PYTHON)
    mounts = [f"--mount={mount_option(path, path, 'rw')}" for path in _host_paths(spec)]
    gpu = ["--device=nvidia.com/gpu=all"] if config.resources.gpus_per_node else []
    env = ["--env=SLURM_*", "--env=LOCKSTEP_*", "--env=PYTHONSAFEPATH=1", *[f"--env={name}" for name in config.distributed.env]]
    return ("podman", "run", "--rm", "--network=host", "--ipc=host", f"--user={os.getuid()}:{os.getgid()}",
            f"--workdir={spec.cwd}", *mounts, *env, *gpu, "--entrypoint=" + images.IMAGE_PYTHON, image)


def _charliecloud_prefix(spec: JobSpec, image: Path) -> tuple[str, ...]:
    """ch-run on the SIF's partition unpacked next to it. The environment, in this order: the caller's
    (Slurm's variables among it), less a virtualenv's; the image's ENV (/ch/environment); the caches
    (bound at their host paths, as the docker backend shares them); what the manifest records of the
    image; PYTHONSAFEPATH, so the image's lockstep runs even from a checkout. The exit code is the job's."""
    image_dir = _charliecloud_image_dir(image)
    binds = [f"--bind={_bind(path)}" for path in _charliecloud_paths(spec)] + [f"--bind={_bind(b)}" for b in spec.config.slurm.binds]
    env = {"HOME": "/tmp", "LOCKSTEP_CACHE": cache.root(), "HF_HOME": paths.host_hf_home(), **_image_env(image, "charliecloud"),
           "PYTHONSAFEPATH": "1"}
    return ("ch-run", "--env-no-expand", "--unset-env=VIRTUAL_ENV", "--unset-env=PYTHONHOME", "--set-env",
            *(f"--set-env={name}={value}" for name, value in env.items()), *binds, f"--cd={spec.cwd}", str(image_dir), "--",
            images.IMAGE_PYTHON)


def _charliecloud_image_dir(image: Path) -> Path:
    return charliecloud.image_directory(image) if image.is_file() else image.with_suffix(".ch")


def _image_env(image: Path, runtime: str) -> dict[str, str]:
    """What the job's manifest records of the SIF it ran from: its path, its partition's sha256, the runtime."""
    digest = charliecloud.partition_sha256(image) if image.is_file() else "unknown"
    return {"LOCKSTEP_IMAGE": str(image), "LOCKSTEP_IMAGE_ID": f"sha256:{digest}", "LOCKSTEP_CONTAINER_RUNTIME": runtime}


def _charliecloud_paths(spec: JobSpec) -> list[Path]:
    """What ch-run binds at the same path: the job's own paths and the two caches."""
    return [*_host_paths(spec), cache.root(), paths.host_hf_home()]


def _image(spec: JobSpec) -> Path:
    return Path(spec.config.slurm.image) if spec.config.slurm.image else default_sif(spec)


def _image_problems(spec: JobSpec) -> list[Check]:
    """Apptainer and charliecloud run the SIF built from the stack's current lock, and nothing else."""
    if spec.config.slurm.container not in ("apptainer", "charliecloud"):
        return []
    image, stack = _image(spec), stacks.get(stack_name(spec))
    rebuild = f"nox -s sif -- {stack.name}" + ("" if spec.config.slurm.image is None else ", then set slurm.image to the SIF it writes")
    if not image.is_file():
        return [limits.problem(summary=f"no SIF at {image}", fix=f"build it: {rebuild}")]
    try:
        parsed = sif_file.read(image)
        labels = json.loads(parsed.read(next(d for d in parsed.descriptors if d.data_type == "labels")))
    except (OSError, StopIteration, ValueError) as exc:
        return [limits.problem(summary=f"{image} is not a SIF lockstep can check ({exc})", fix=f"build it again: {rebuild}")]
    if labels.get("io.lockstep.lock-sha256") != file_sha256(stack.lock_file):
        return [limits.problem(summary=f"{image} was built from another lock of stack {stack.name} than lockfiles/{stack.lock_file.name}",
                               fix=f"rebuild it from the current lock: {rebuild}")]
    return []


def _bind_problems(spec: JobSpec) -> list[Check]:
    sources = [bind.split(":", 1)[0] for bind in spec.config.slurm.binds]
    missing = [source for source in sources if not Path(source).exists()]
    return [limits.problem(summary=f"slurm.binds: {source!r} does not exist on this machine",
                           fix="create it, or remove it from slurm.binds (sources are host paths, SRC or SRC:DEST)")
            for source in missing]


def _bind_target(bind: str) -> Path:
    return Path(bind.split(":", 1)[1] if ":" in bind else bind)


def default_sif(spec: JobSpec) -> Path:
    """Where `nox -s sif -- STACK` writes the stack's Apptainer image for the current files."""
    tag = images.spec(stacks.get(stack_name(spec))).tag
    return stacks.LOCKFILES.parent / "build" / "sif" / sif.out_name(tag)


def stack_name(spec: JobSpec) -> str:
    return environment.container_stack(spec.config.stack)


def _host_paths(spec: JobSpec) -> list[Path]:
    """The directories and files the containerised job reads and writes on the host."""
    return [spec.cwd, *paths.outside([spec.run_dir, *paths.inputs(spec.config, spec.config_path, spec.cwd)], spec.cwd)]


def _bind(path: Path | str) -> str:
    text = str(path)
    if any(char in text for char in ",\n") or (isinstance(path, Path) and ":" in text):
        raise BackendError(f"cannot bind {text!r} into Apptainer: its name has a comma, colon or newline; rename it or move it")
    return text
