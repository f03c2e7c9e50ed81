"""`--backend docker`: the run inside its stack's image (docker or podman), its files on the host.

The image is built first if the current files have none (`runner.images`). The container
sees the working directory, the config, data, model and run directory at the same paths as
the host, so relative paths in a config mean the same thing in both, and runs as the
invoking user, so the run directory stays the user's. The run directory is written through
the mount: a stopped or crashed container resumes like a local run.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from runner import containers, environment, foreground, images, job, shell, stacks
from runner.backends import paths
from runner.backends.base import Submission
from runner.config import RunConfig
from runner.demo import tiny_model
from runner.errors import ImageError

NAME = "docker"
CACHE_IN_CONTAINER = "/cache/lockstep"
HF_HOME_IN_CONTAINER = "/cache/huggingface"
# Passed by name, so no value appears in a command line: the Hub token, and the run directory's lock this
# process holds, which the job in the container inherits (runner.run_lock).
PASSED_THROUGH = ("HF_TOKEN", "LOCKSTEP_RUN_LOCK")


def train(args: argparse.Namespace, config: RunConfig) -> int:
    stack = stacks.get(environment.container_stack(config.stack))
    tool = containers.find("run")
    if args.dry_run:
        ref, image_id = images.spec(stack).tag, "(built before the run if missing)"
    else:
        built = images.build(stack, tool=tool)
        ref, image_id = built.spec.tag, built.info.id
    submission = prepare(
        config, Path(args.config), args.overrides, tool=tool.name, image=ref, image_id=image_id, gpus=stack.accelerator == "cuda",
        fresh=args.fresh, strict_env=args.strict_env, host_cache=tiny_model.cache_dir().parent, hf_home=paths.host_hf_home(),
        cwd=Path.cwd(), user=f"{os.getuid()}:{os.getgid()}", environ=os.environ,
    )
    if args.dry_run:
        print(shell.join(submission.argv))
        return 0
    for directory in submission.create_dirs:
        Path(directory).mkdir(parents=True, exist_ok=True)
    return submit(submission)


def prepare(
    config: RunConfig, config_path: Path, overrides: list[str], *, tool: str, image: str, image_id: str, gpus: bool,
    fresh: bool, strict_env: bool, host_cache: Path, hf_home: Path, cwd: Path, user: str, environ: Mapping[str, str],
) -> Submission:
    """The exact `docker run` / `podman run` command; pure, so it can be compared with a golden file."""
    cwd = cwd.resolve()
    output_dir = paths.absolute(config.output_dir, cwd)
    mounts = [(cwd, cwd, "rw"), (host_cache, Path(CACHE_IN_CONTAINER), "rw"), (hf_home, Path(HF_HOME_IN_CONTAINER), "rw")]
    if not paths.inside(output_dir, cwd):
        mounts.append((output_dir, output_dir, "rw"))
    mounts += [(path, path, "ro") for path in paths.outside(paths.inputs(config, config_path, cwd), cwd)]
    argv = [tool, "run", "--rm", f"--user={user}", f"--workdir={cwd}", "--ipc=host", f"--label=io.lockstep.run={output_dir}"]
    argv += [f"--mount={mount_option(source, target, mode)}" for source, target, mode in mounts]
    env = {"HOME": "/tmp", "LOCKSTEP_CACHE": CACHE_IN_CONTAINER, "HF_HOME": HF_HOME_IN_CONTAINER,
           "LOCKSTEP_IMAGE": image, "LOCKSTEP_IMAGE_ID": image_id}
    argv += [f"--env={key}={value}" for key, value in env.items()]
    argv += [f"--env={name}" for name in PASSED_THROUGH if name in environ]
    if gpus:  # docker's NVIDIA runtime flag; podman reaches GPUs through CDI
        argv.append("--gpus=all" if tool == "docker" else "--device=nvidia.com/gpu=all")
    processes = config.resources.processes_per_node
    if processes > 1:  # the node launcher (torchrun) instead of the image's single-process entry point
        argv += [f"--entrypoint={images.IMAGE_PYTHON}", image, "-m", "runner.launch", f"--nproc-per-node={processes}", "--"]
    else:
        argv.append(image)
    argv += job.entry_arguments(str(paths.absolute(str(config_path), cwd)), backend=NAME, overrides=overrides, fresh=fresh,
                                strict_env=strict_env)
    return Submission(files={}, argv=tuple(argv), create_dirs=(str(output_dir), str(host_cache), str(hf_home)))


def submit(submission: Submission) -> int:
    """Run the container in the foreground and return its exit code (75: stopped, checkpointed)."""
    code = foreground.run(submission.argv)
    if code == 125 or code == 127:  # docker/podman's own failures, before the job started
        print(f"lockstep: {submission.argv[0]} could not start the container (exit {code}); see its message above", file=sys.stderr)
    return code


def mount_option(source: Path, target: Path, mode: str) -> str:
    """A --mount value. docker and podman read it as one CSV record, so a path with a comma or a
    double quote is quoted the CSV way, and stays one field."""
    if "\n" in f"{source}{target}":
        raise ImageError(f"cannot mount {str(source)!r} into a container: its name has a newline; rename it")
    fields = ["type=bind", f"source={source}", f"destination={target}"] + (["ro"] if mode == "ro" else [])
    record = io.StringIO()
    csv.writer(record, lineterminator="").writerow(fields)
    return record.getvalue()
