"""The `lockstep` command: parses arguments, calls the runner, maps LockstepError to exit codes."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from runner import config as config_module
from runner.errors import LockstepError

BACKENDS = ("local",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lockstep", description="Run one LLM fine-tune identically anywhere.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a config (the run resumes where it stopped)")
    train.add_argument("config", help="YAML run config, e.g. configs/demo.yaml")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set train.learning_rate=1e-4 (repeatable)",
    )
    train.add_argument("--backend", choices=BACKENDS, default="local", help="where to run (default: local)")
    train.add_argument("--fresh", action="store_true", help="start over; the earlier run directory is moved aside, not deleted")
    train.add_argument(
        "--strict-env", action="store_true",
        help="refuse to train unless this environment is exactly its stack's lock (see lockfiles/)",
    )

    check = commands.add_parser("check-config", help="validate a config and print it resolved, without training")
    check.add_argument("config")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_module.load(args.config, args.overrides)
        if args.command == "check-config":
            import yaml

            print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
            return 0
        from runner import entrypoint

        entrypoint.main(config, backend=args.backend, fresh=args.fresh, strict_env=args.strict_env)
        return 0
    except LockstepError as exc:
        print(f"lockstep: {exc.label}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lockstep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
