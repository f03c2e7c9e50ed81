"""`--backend docker`: the run inside its stack's image (docker or podman), its files on the host.

The image is built first if the current files have none (`runner.stacks.images`). The container
sees the working directory, the config, data, model and run directory at the same paths as
the host, so relative paths in a config mean the same thing in both, and runs as the
invoking user, so the run directory stays the user's. The run directory is written through
the mount: a stopped or crashed container resumes like a local run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from runner import stacks
from runner.backends import limits, paths
from runner.backends.base import JobHandle, JobState, Started, Submission, no_job
from runner.job import arguments
from runner.problems import Check
from runner.spec import JobSpec
from runner.stacks import containers, environment, images
from runner.stacks.containers import mount_option
from runner.util import cache, console, foreground

CACHE_IN_CONTAINER = "/cache/lockstep"
HF_HOME_IN_CONTAINER = "/cache/huggingface"
# Passed by name, so no value appears in a command line: the Hub token, and the run directory's lock this
# process holds, which the job in the container inherits (runner.run_lock).
PASSED_THROUGH = ("HF_TOKEN", "LOCKSTEP_RUN_LOCK")
NOT_BUILT = "(built before the run if missing)"  # the image id a --dry-run shows


@dataclass(frozen=True, kw_only=True)
class Host:
    """What the container command takes from the machine it starts on."""

    tool: str  # docker or podman
    user: str  # uid:gid the container runs as
    cache: Path  # lockstep's cache (built-in models), shared with the container
    hf_home: Path  # the Hugging Face cache, shared with the container
    environ: Mapping[str, str]

    @classmethod
    def here(cls) -> Host:
        return cls(tool=containers.find("run").name, user=f"{os.getuid()}:{os.getgid()}", cache=cache.root(),
                   hf_home=paths.host_hf_home(), environ=os.environ)


class Docker:
    name: ClassVar[str] = "docker"
    detached: ClassVar[bool] = False

    def __init__(self, host: Host | None = None) -> None:
        self._host = host

    @property
    def host(self) -> Host:
        if self._host is None:
            self._host = Host.here()
        return self._host

    def check(self, spec: JobSpec) -> list[Check]:
        return limits.common(spec.config, self.name)

    def prepare(self, spec: JobSpec) -> Submission:
        return self.command(spec, image=images.spec(_stack(spec)).tag, image_id=NOT_BUILT)

    def submit(self, spec: JobSpec, submission: Submission) -> Started:
        """Build the image if needed, then run the container in the foreground (exit 75: stopped, checkpointed)."""
        built = images.build(_stack(spec), tool=containers.find("run"))
        run = self.command(spec, image=built.spec.tag, image_id=built.info.id)
        for directory in run.create_dirs:
            Path(directory).mkdir(parents=True, exist_ok=True)
        code = foreground.run(run.argv)
        if code in (125, 127):  # docker/podman's own failures, before the job started
            console.say(f"{run.argv[0]} could not start the container (exit {code}); see its message above")
        return Started(exit_code=code)

    def command(self, spec: JobSpec, *, image: str, image_id: str) -> Submission:
        """The exact `docker run` / `podman run` command; pure, so it can be compared with a golden file."""
        host, config = self.host, spec.config
        cwd = spec.cwd.resolve()
        output_dir = paths.absolute(config.output_dir, cwd)
        mounts = [(cwd, cwd, "rw"), (host.cache, Path(CACHE_IN_CONTAINER), "rw"), (host.hf_home, Path(HF_HOME_IN_CONTAINER), "rw")]
        if not paths.inside(output_dir, cwd):
            mounts.append((output_dir, output_dir, "rw"))
        mounts += [(path, path, "ro") for path in paths.outside(paths.inputs(config, spec.config_path, cwd), cwd)]
        argv = [host.tool, "run", "--rm", f"--user={host.user}", f"--workdir={cwd}", "--ipc=host", f"--label=io.lockstep.run={output_dir}"]
        argv += [f"--mount={mount_option(source, target, mode)}" for source, target, mode in mounts]
        env = {"HOME": "/tmp", "LOCKSTEP_CACHE": CACHE_IN_CONTAINER, "HF_HOME": HF_HOME_IN_CONTAINER,
               "LOCKSTEP_IMAGE": image, "LOCKSTEP_IMAGE_ID": image_id,
               "PYTHONSAFEPATH": "1"}  # the image's lockstep runs, not a checkout's in the working directory
        argv += [f"--env={key}={value}" for key, value in env.items()]
        argv += [f"--env={name}" for name in PASSED_THROUGH if name in host.environ]
        if _stack(spec).accelerator == "cuda":  # docker's NVIDIA runtime flag; podman reaches GPUs through CDI
            argv.append("--gpus=all" if host.tool == "docker" else "--device=nvidia.com/gpu=all")
        processes = config.resources.processes_per_node
        if processes > 1:  # the node launcher (torchrun) instead of the image's single-process entry point
            argv += [f"--entrypoint={images.IMAGE_PYTHON}", image, "-m", arguments.LAUNCH_MODULE, f"--nproc-per-node={processes}", "--"]
        else:
            argv.append(image)
        argv += arguments.entry_arguments(str(paths.absolute(str(spec.config_path), cwd)), backend=self.name, overrides=spec.overrides,
                                          fresh=spec.fresh, strict_env=spec.strict_env)
        return Submission(files={}, argv=tuple(argv), create_dirs=(str(output_dir), str(host.cache), str(host.hf_home)))

    def state(self, handle: JobHandle) -> JobState:
        raise no_job(self.name)

    def cancel(self, handle: JobHandle) -> None:
        raise no_job(self.name)

    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]:
        raise no_job(self.name)


def _stack(spec: JobSpec) -> stacks.Stack:
    return stacks.get(environment.container_stack(spec.config.stack))
