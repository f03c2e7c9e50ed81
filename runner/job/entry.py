"""`python -m runner.job CONFIG [--set KEY=VALUE ...]`: the in-job entry point every backend starts.

It trains in the environment it runs in (a venv, an image, a cluster node): `lockstep train
--backend local` calls the same code, and a container or a scheduler job starts this module,
naming its backend so the manifest records where the run executed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from runner import config as config_module
from runner.errors import run_command
from runner.job import arguments, storage

EXIT_DIR_ENV = "LOCKSTEP_EXIT_DIR"  # set by runner.job.launch, which reports the node's code


def train(config: config_module.RunConfig, *, backend: str, fresh: bool = False, strict_env: bool = False) -> int:
    """Train `config` here, with the storage hook the starting backend named; 0 once the run is complete."""
    from runner.job import run
    from runner.training import allocator

    allocator.set_default()  # before CUDA is first used: torch reads the variable then
    run.main(config, backend=backend, fresh=fresh, strict_env=strict_env, after_checkpoint=storage.from_environment())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {arguments.JOB_MODULE}", description=__doc__.splitlines()[0])
    arguments.add_run_arguments(parser)
    parser.add_argument("--backend", default="local", help="the backend that started this job, for the manifest")
    args = parser.parse_args(argv)
    code = run_command(lambda: train(config_module.load(args.config, args.overrides), backend=args.backend, fresh=args.fresh,
                                     strict_env=args.strict_env))
    exit_dir = os.environ.get(EXIT_DIR_ENV)
    if exit_dir:
        (Path(exit_dir) / f"rank-{os.environ.get('RANK', '0')}").write_text(str(code))
    return code
