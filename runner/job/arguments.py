"""The arguments that describe one run, shared by `lockstep train` and `python -m runner.job`, and the in-job
command line every backend builds (plain data: the submitting side needs nothing of the training code)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

JOB_MODULE = "runner.job"  # `python -m runner.job ARGS`: what every backend starts
LAUNCH_MODULE = "runner.job.launch"  # `python -m runner.job.launch ... -- ARGS`: the same under torchrun, one per node


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
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


def entry_arguments(config: str, *, backend: str, overrides: Sequence[str] = (), fresh: bool = False, strict_env: bool = False) -> list[str]:
    """The arguments of `python -m runner.job ...`, as every backend passes them."""
    return [config, "--backend", backend, *[f"--set={item}" for item in overrides], *["--fresh"] * fresh, *["--strict-env"] * strict_env]
