"""The `lockstep` command: parses arguments, calls the runner, maps LockstepError to exit codes."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from runner import config as config_module
from runner import job
from runner.errors import run_command

BACKENDS = ("local", "docker")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lockstep", description="Run one LLM fine-tune identically anywhere.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a config (the run resumes where it stopped)")
    job.add_run_arguments(train)
    train.add_argument(
        "--backend", choices=BACKENDS, default="local",
        help="where to run: local (this environment) or docker (the stack's image, with docker or podman)",
    )
    train.add_argument("--stack", help="the stack whose image runs a container backend (default: this environment's, else cpu)")
    train.add_argument("--dry-run", action="store_true", help="print the exact command a container backend would run, run nothing")

    check = commands.add_parser("check-config", help="validate a config and print it resolved, without training")
    check.add_argument("config")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.backend == "local" and (args.dry_run or args.stack):
        # Not ignored: a --dry-run that trained for real would be the worst surprise.
        parser.error("--dry-run and --stack apply to container backends (--backend docker); a local run uses this environment")
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    config = config_module.load(args.config, args.overrides)  # every config problem, before anything else
    if args.command == "check-config":
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    if args.backend == "docker":
        from runner.backends import docker

        return docker.train(args, config)
    return job.run(config, args, "local")


if __name__ == "__main__":
    sys.exit(main())
