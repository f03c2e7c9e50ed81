"""`python -m runner.job CONFIG [--set KEY=VALUE ...]`: the in-job entry point every backend starts.

It trains in the environment it runs in (a venv, an image, a cluster node): `lockstep train
--backend local` calls the same code, and a container or a scheduler job starts this module,
naming its backend so the manifest records where the run executed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from runner import config as config_module
from runner.errors import run_command


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that describe one run, the same for `lockstep train` and the in-job entry."""
    parser.add_argument("config", help="YAML run config, e.g. configs/demo.yaml")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set train.learning_rate=1e-4 (repeatable)",
    )
    parser.add_argument("--fresh", action="store_true", help="start over; the earlier run directory is moved aside, not deleted")
    parser.add_argument(
        "--strict-env", action="store_true",
        help="refuse to train unless this environment is exactly its stack's lock (see lockfiles/)",
    )


def run(config: config_module.RunConfig, args: argparse.Namespace, backend: str) -> int:
    from runner import allocator, entrypoint
    from runner.backends.modal_plan import STORAGE_HOOK_ENV

    allocator.set_default()  # before CUDA is first used: torch reads the variable then
    hook = None
    if os.environ.get(STORAGE_HOOK_ENV):  # inside a Modal container: commit the volume after each checkpoint
        from runner.backends import modal_app

        hook = modal_app.commit_hook(os.environ[STORAGE_HOOK_ENV])
    entrypoint.main(config, backend=backend, fresh=args.fresh, strict_env=args.strict_env, after_checkpoint=hook)
    return 0


def run_local(config: config_module.RunConfig, args: argparse.Namespace) -> int:
    """`--backend local`: train here; several processes (resources.processes_per_node) under torchrun;
    in the environment of the config's stack when that is not this one."""
    from runner import stack_venv

    stack = stack_venv.target(config)
    if stack is not None:
        from runner import foreground, stacks

        python = stack_venv.ensure(stacks.get(stack))
        job_args = entry_arguments(str(args.config), backend="local", overrides=args.overrides, fresh=args.fresh, strict_env=args.strict_env)
        print(f"lockstep: training in the environment of stack {stack} ({python.parent.parent})", file=sys.stderr, flush=True)
        return foreground.run([str(python), "-m", "runner.job", *job_args], env=stack_venv.job_environment())
    processes = config.resources.processes_per_node
    if processes == 1 or "WORLD_SIZE" in os.environ:  # one process, or already one of torchrun's workers
        return run(config, args, "local")
    from runner import launch

    job_args = entry_arguments(str(args.config), backend="local", overrides=args.overrides, fresh=args.fresh, strict_env=args.strict_env)
    return launch.run(nnodes=1, nproc=processes, node_rank=0, master_addr=None, master_port=launch.DEFAULT_PORT, job_args=job_args)


def entry_arguments(config: str, *, backend: str, overrides: Sequence[str] = (), fresh: bool = False, strict_env: bool = False) -> list[str]:
    """The arguments of this entry point (`python -m runner.job ...`), as every backend passes them."""
    return [config, "--backend", backend, *[f"--set={item}" for item in overrides], *["--fresh"] * fresh, *["--strict-env"] * strict_env]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.job", description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--backend", default="local", help="the backend that started this job, for the manifest")
    args = parser.parse_args(argv)
    code = run_command(lambda: run(config_module.load(args.config, args.overrides), args, args.backend))
    exit_dir = os.environ.get("LOCKSTEP_EXIT_DIR")  # set by runner.launch, which reports the node's code
    if exit_dir:
        (Path(exit_dir) / f"rank-{os.environ.get('RANK', '0')}").write_text(str(code))
    return code


if __name__ == "__main__":
    sys.exit(main())
