"""`--backend slurm`: the run as an sbatch job (runner.backends.slurm_script), submitted with
`sbatch --parsable`, watched through `scontrol show job --oneliner` (machine-readable KEY=VALUE)
and, once Slurm has forgotten the job, `sacct --parsable2`."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import yaml

from runner import stacks
from runner.backends import jobs, limits, paths
from runner.backends.base import JobHandle, JobState, Started, Submission
from runner.backends.slurm_script import ScriptInputs, launcher_args, render
from runner.errors import BackendError
from runner.job import arguments
from runner.problems import Check
from runner.rundir import CONFIG_FILE
from runner.spec import JobSpec
from runner.stacks import charliecloud, environment, images, sif, sif_file
from runner.stacks.containers import mount_option
from runner.util import cache, shell
from runner.util.hashing import file_sha256

SCRIPT = "job.sbatch"
SNAPSHOT = CONFIG_FILE  # in jobs/<id>/: the resolved config the job runs; later edits to the YAML cannot change a queued job


class Slurm:
    name: ClassVar[str] = "slurm"
    detached: ClassVar[bool] = True

    def check(self, spec: JobSpec) -> list[Check]:
        problems = limits.common(spec.config, self.name) + limits.slurm(spec.config, partition_limits(spec.config.slurm.partition))
        container = spec.config.slurm.container
        problems += _image_problems(spec) + _bind_problems(spec)
        tools = {"apptainer": ("apptainer",), "charliecloud": ("ch-run", "unsquashfs"), "podman": ("podman",), "none": ()}
        for tool in tools[container] + ("sbatch",):
            if shutil.which(tool) is None:
                problems.append(limits.problem(status="warning", summary=f"{tool} is not on this machine's PATH",
                                        fix="submit from a machine of the cluster (a login node), or --dry-run to see the script"))
        return problems

    def prepare(self, spec: JobSpec) -> Submission:
        config = spec.config
        script = spec.job_dir / SCRIPT
        submit_argv = ("sbatch", "--parsable", f"--output={_sbatch_pattern(log_file(spec.job_dir, '%j'))}", f"--chdir={spec.cwd}",
                       *config.slurm.sbatch_args, str(script))
        job_args = arguments.entry_arguments(str(spec.job_dir / SNAPSHOT), backend=self.name, strict_env=spec.strict_env)
        resubmit = shell.join(["lockstep", "train", str(spec.config_path), "--backend", self.name,
                               *[f"--set={item}" for item in spec.overrides]])
        # ch-run needs $USER, which a batch job's environment may lack
        env = {"USER": getpass.getuser()} if config.slurm.container == "charliecloud" else {}
        inputs = ScriptInputs(config=config, job_dir=spec.job_dir, submission_id=spec.submission_id,
                              launch=launch_prefix(spec), launcher_args=launcher_args(config, job_args),
                              resubmit=resubmit, submit_argv=submit_argv, env=env)
        return Submission(files={SCRIPT: render(inputs), SNAPSHOT: yaml.safe_dump(config.to_dict(), sort_keys=False)},
                          argv=submit_argv, create_dirs=(str(spec.job_dir),))

    def submit(self, spec: JobSpec, submission: Submission) -> Started:
        if spec.config.slurm.container == "charliecloud":  # the image directory ch-run runs, with this job's mount points
            for directory in (cache.root(), paths.host_hf_home()):
                directory.mkdir(parents=True, exist_ok=True)
            image_dir = charliecloud.unpack(_image(spec))
            charliecloud.add_mount_points(image_dir, [*_charliecloud_paths(spec), *(_bind_target(b) for b in spec.config.slurm.binds)])
        result = subprocess.run(submission.argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise BackendError(f"sbatch refused the job (exit {result.returncode}): {result.stderr.strip()}\n"
                               f"the script is {spec.job_dir / SCRIPT}; fix the config and submit again")
        job_id = result.stdout.strip().split(";")[0]  # --parsable: "ID" or "ID;CLUSTER"
        return Started(handle=JobHandle(backend=self.name, job_id=job_id, job_dir=spec.job_dir, submitted_at=jobs.now(),
                                        details={"log": str(log_file(spec.job_dir, job_id))}))

    def state(self, handle: JobHandle) -> JobState:
        shown = subprocess.run(["scontrol", "show", "job", handle.job_id, "--oneliner"], capture_output=True, text=True)
        if shown.returncode == 0 and shown.stdout.strip():
            fields = parse_key_values(shown.stdout)
            return JobState(state=fields.get("JobState", "UNKNOWN"), reason=fields.get("Reason", "").replace("None", ""),
                            restarts=int(fields["Restarts"]) if fields.get("Restarts", "").isdigit() else None,
                            exit_code=fields.get("ExitCode"))
        return _state_from_accounting(handle.job_id)

    def cancel(self, handle: JobHandle) -> None:
        result = subprocess.run(["scancel", handle.job_id], capture_output=True, text=True)
        if result.returncode != 0:
            raise BackendError(f"scancel {handle.job_id} failed: {result.stderr.strip()}")

    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]:
        log = log_file(handle.job_dir, handle.job_id)
        position = 0
        while True:
            if log.is_file():
                with log.open(encoding="utf-8", errors="replace") as stream:
                    stream.seek(position)
                    yield from stream
                    position = stream.tell()
            if not follow or not self.state(handle).active:
                return
            time.sleep(2)


def log_file(job_dir: Path, job_id: str) -> Path:
    """The job's output, all attempts appended (`%j` in the pattern sbatch is given)."""
    return job_dir / f"slurm-{job_id}.out"


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
        env = [f"--env={name}={value}" for name, value in _image_env(Path(image), "apptainer").items()]
        return ("apptainer", "exec", *gpu, *binds, *env, f"--pwd={spec.cwd}", image, images.IMAGE_PYTHON)
    mounts = [f"--mount={mount_option(path, path, 'rw')}" for path in _host_paths(spec)]
    gpu = ["--device=nvidia.com/gpu=all"] if config.resources.gpus_per_node else []
    env = ["--env=SLURM_*", "--env=LOCKSTEP_*", *[f"--env={name}" for name in config.distributed.env]]
    return ("podman", "run", "--rm", "--network=host", "--ipc=host", f"--user={os.getuid()}:{os.getgid()}",
            f"--workdir={spec.cwd}", *mounts, *env, *gpu, "--entrypoint=" + images.IMAGE_PYTHON, image)


def _charliecloud_prefix(spec: JobSpec, image: Path) -> tuple[str, ...]:
    """ch-run on the SIF's partition unpacked next to it. The environment, in this order: the caller's
    (Slurm's variables among it), less a virtualenv's; the image's ENV (/ch/environment); the caches
    (bound at their host paths, as the docker backend shares them); what the manifest records of the
    image; PYTHONSAFEPATH, so the image's lockstep runs even from a checkout. The exit code is the job's."""
    image_dir = charliecloud.image_directory(image) if image.is_file() else image.with_suffix(".ch")
    binds = [f"--bind={_bind(path)}" for path in _charliecloud_paths(spec)] + [f"--bind={_bind(b)}" for b in spec.config.slurm.binds]
    env = {"HOME": "/tmp", "LOCKSTEP_CACHE": cache.root(), "HF_HOME": paths.host_hf_home(), **_image_env(image, "charliecloud"),
           "PYTHONSAFEPATH": "1"}
    return ("ch-run", "--env-no-expand", "--unset-env=VIRTUAL_ENV", "--unset-env=PYTHONHOME", "--set-env",
            *(f"--set-env={name}={value}" for name, value in env.items()), *binds, f"--cd={spec.cwd}", str(image_dir), "--",
            images.IMAGE_PYTHON)


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


def partition_limits(partition: str | None) -> dict[str, str] | None:
    """`scontrol show partition` as KEY -> VALUE (the default partition when none is named);
    None where Slurm cannot be asked (not a cluster machine)."""
    if shutil.which("scontrol") is None:
        return None
    argv = ["scontrol", "show", "partition", "--oneliner"] + ([partition] if partition else [])
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        if partition and "not found" in (result.stderr + result.stdout).lower():
            return {"PartitionName": partition, "State": "UNKNOWN (no such partition; sinfo lists them)"}
        return None
    records = [parse_key_values(line) for line in result.stdout.splitlines() if line.strip()]
    if partition:
        return records[0] if records else None
    defaults = [record for record in records if record.get("Default") == "YES"]
    return defaults[0] if defaults else None


def parse_key_values(line: str) -> dict[str, str]:
    """Slurm's one-line KEY=VALUE records (values have no spaces, except a few free-text fields we skip)."""
    fields = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def _state_from_accounting(job_id: str) -> JobState:
    result = subprocess.run(["sacct", "--jobs", job_id, "--allocations", "--noheader", "--parsable2",
                             "--format=State,Reason,Restarts,ExitCode"], capture_output=True, text=True)
    rows = [line.split("|") for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []
    if not rows:
        return JobState(state="UNKNOWN", reason="Slurm no longer lists the job and has no accounting record of it")
    state, reason, restarts, exit_code = (rows[-1] + ["", "", "", ""])[:4]
    return JobState(state=state.split()[0], reason=reason, restarts=int(restarts) if restarts.isdigit() else None, exit_code=exit_code)


def _host_paths(spec: JobSpec) -> list[Path]:
    """The directories and files the containerised job reads and writes on the host."""
    return [spec.cwd, *paths.outside([spec.run_dir, *paths.inputs(spec.config, spec.config_path, spec.cwd)], spec.cwd)]


def _bind(path: Path | str) -> str:
    text = str(path)
    if any(char in text for char in ",\n") or (isinstance(path, Path) and ":" in text):
        raise BackendError(f"cannot bind {text!r} into Apptainer: its name has a comma, colon or newline; rename it or move it")
    return text


def _sbatch_pattern(path: Path) -> str:
    """sbatch expands %j, %x... in --output; a literal % in the directory is written %%."""
    return str(path.parent).replace("%", "%%") + "/" + path.name
