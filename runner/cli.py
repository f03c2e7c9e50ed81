"""The `lockstep` command: parses the arguments, dispatches once to the command's function, and maps a LockstepError to its exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from runner import backends, run_lock
from runner import config as config_module
from runner.backends import jobs
from runner.errors import LimitError, run_command
from runner.job import arguments
from runner.preflight import hardware
from runner.rundir import load_summary
from runner.spec import JobSpec
from runner.util import console

EXAMPLES = {
    "train": ["lockstep train configs/demo.yaml", "lockstep train run.yaml --set train.learning_rate=1e-4 --backend slurm --dry-run"],
    "preflight": ["lockstep preflight configs/demo.yaml", "lockstep preflight run.yaml --hardware A100-80GB --apply"],
    "status": ["lockstep status runs/demo"],
    "logs": ["lockstep logs runs/demo --follow"],
    "cancel": ["lockstep cancel runs/demo"],
    "generate": ['lockstep generate runs/demo --prompt "What is the capital of France?"',
                 "lockstep generate runs/demo --file prompts.jsonl --max-new-tokens 128"],
    "merge": ["lockstep merge runs/demo"],
    "monitor": ["lockstep monitor runs/demo", "lockstep monitor runs/demo --once"],
    "report": ["lockstep report runs/demo", "lockstep report runs/a runs/b -o compare.html"],
    "validate-data": ["lockstep validate-data train.jsonl valid.jsonl", "lockstep validate-data --config run.yaml"],
    "check-config": ["lockstep check-config run.yaml --set train.epochs=2"],
}


def build_parser() -> argparse.ArgumentParser:
    from runner import __version__

    parser = argparse.ArgumentParser(prog="lockstep", description="Run one LLM fine-tune identically anywhere.",
                                     epilog="`lockstep COMMAND --help` describes each command, with examples.")
    parser.add_argument("--version", action="version", version=f"lockstep {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        examples = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
        return commands.add_parser(name, help=text, description=text, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)

    train = command("train", "train a config (the run resumes where it stopped)")
    arguments.add_run_arguments(train)
    train.add_argument(
        "--backend", choices=backends.NAMES, default="local",
        help="where to run: local (this environment), docker (the stack's image, with docker or podman), "
             "slurm (an sbatch job; resources, partition and container in the config), "
             "modal (a detached Modal function call; GPUs, volume and secrets in the config)",
    )
    train.add_argument("--dry-run", action="store_true",
                       help="print the exact command or job script the backend would run, and run nothing")
    _add_waive(train)

    preflight = command("preflight", "check everything the run needs and recommend settings for the hardware")
    _add_config(preflight)
    preflight.add_argument("--backend", choices=backends.NAMES, default="local", help="where the run will execute (default: local)")
    preflight.add_argument("--hardware", metavar="PROFILE",
                           help="plan for this hardware instead of this machine's: " + ", ".join(hardware.profile_names()))
    preflight.add_argument("--apply", nargs="?", const=True, default=None, metavar="PATH",
                           help="write the config with the recommended values to a new file (default: CONFIG.recommended.yaml)")
    preflight.add_argument("--strict-env", action="store_true", help="count drift from the stack's lock as an error")
    _add_waive(preflight)

    for name, text in (("status", "the state of a run and of its scheduler job"), ("logs", "the output of a run's scheduler job"),
                       ("cancel", "cancel a run's scheduler job (its checkpoints stay)")):
        job_command = command(name, text)
        job_command.add_argument("run_dir", metavar="RUN", type=Path, help="the run directory (the config's output_dir)")
        if name == "logs":
            job_command.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")

    generate = command("generate", "answer prompts with a finished run's model and adapter")
    from runner.use import generate as generate_module

    generate_module.add_arguments(generate)

    merge = command("merge", "merge a finished run's adapter into its base model (RUN/merged_model)")
    merge.add_argument("run_dir", metavar="RUN", type=Path, help="a finished run directory")

    monitor = command("monitor", "a live view of a run as it trains: progress, ETA, losses, checkpoints, job state")
    from runner.reports import monitor as monitor_module

    monitor_module.add_arguments(monitor)

    report = command("report", "an HTML report of a run (RUN/report.html), or of several runs compared")
    from runner.reports import html_report

    html_report.add_arguments(report)

    validate = command("validate-data", "check JSONL training data (every bad line as file:line) without a run")
    validate.add_argument("files", nargs="*", metavar="FILE", help="JSONL files; the first is the training data, the others are "
                          "checked for rows it shares with them (e.g. the validation data); default: the data files of --config")
    validate.add_argument("--format", choices=["auto", "text", "prompt_completion", "messages"], default=None,
                          help="the rows' format (default: the config's data.format, else told by the first row)")
    validate.add_argument("--config", help="a run config: its data files (when no FILE is given), its data.format, and token "
                          "lengths counted with its tokenizer against its max_seq_len")
    _add_set(validate)

    check = command("check-config", "validate a config and print it resolved, without training")
    _add_config(check)
    return parser


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="YAML run config, e.g. configs/demo.yaml")
    _add_set(parser)


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set train.learning_rate=1e-4 (repeatable)")


def _add_waive(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--waive", action="append", default=[], metavar="CHECK",
                        help="accept a failed preflight check and go on (repeatable; `data` waives every data.* check)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.backend == "local" and args.dry_run:
        # Not ignored: a --dry-run that trained for real would be the worst surprise.
        parser.error("--dry-run applies to --backend docker, slurm and modal; a local run has nothing to print but itself")
    if args.command == "validate-data" and not args.files and not args.config:
        parser.error("validate-data needs FILE... (JSONL data files), or --config CONFIG to check that config's data files")
    return run_command(lambda: COMMANDS[args.command](args))


def _train(args: argparse.Namespace) -> int:
    """Preflight, then the backend: prepare, and submit (or print, with --dry-run)."""
    from runner.backends import submit

    spec = _spec(args)
    if not args.dry_run and _claim(args, spec):
        return 0
    _gate(args, spec)
    return submit.start(backends.get(args.backend), spec, dry_run=args.dry_run)


def _claim(args: argparse.Namespace, spec: JobSpec) -> bool:
    """Make the run directory this command's before anything is written there (submit.claim); True when
    the run is already finished and there is nothing to do (checked before preflight, which would
    overwrite the record of the run's start)."""
    from runner.backends import submit
    from runner.preflight import output as preflight_output
    from runner.training import distributed

    if not distributed.is_main():
        return False  # one of the workers `torchrun -m runner train` starts: rank 0 claims the run for all of them
    if not spec.fresh:
        preflight_output.check_destination(spec.run_dir)  # before anything, even the lock, is written there
    submit.claim(spec, args.backend)
    if load_summary(spec.run_dir) is None:
        return False
    console.say(f"run already complete in {spec.run_dir}; nothing to do (--fresh trains it again, keeping the old one)")
    return True


def _preflight(args: argparse.Namespace) -> int:
    from runner.preflight import checks as preflight
    from runner.preflight import output as preflight_output

    spec = _spec(args)
    checked = preflight.run(spec, args.backend, hardware_profile=args.hardware, waive=args.waive)
    preflight_output.print_table(checked, spec, sys.stdout)
    problem = preflight_output.destination_problem(spec.run_dir, standalone=True)
    if problem:
        print(f"report not written: {problem}")
    else:
        with run_lock.hold(spec.run_dir):
            written = preflight_output.write(checked, spec)
        print(f"report: {written}\nrecommended config: {written.with_name(preflight_output.RECOMMENDED_FILE)}")
    if args.apply is not None:
        path = preflight_output.apply(checked, spec, None if args.apply is True else Path(args.apply))
        print(f"applied: {path} (train with: lockstep train {path})")
    if checked.blocking:
        preflight_output.refuse(checked, spec.run_dir, written=not problem)
    return 0


def _gate(args: argparse.Namespace, spec: JobSpec) -> None:
    """`lockstep train` runs preflight first and starts nothing while an error is not waived."""
    from runner.preflight import checks as preflight
    from runner.preflight import output as preflight_output

    checked = preflight.run(spec, args.backend, waive=args.waive)
    preflight_output.print_table(checked, spec, sys.stderr)
    if not args.dry_run:
        preflight_output.write(checked, spec)
    limit_errors = [check.summary + (f": {check.fix}" if check.fix else "") for check in checked.blocking if check.name == "limits"]
    if limit_errors:
        raise LimitError(args.backend, limit_errors)
    if checked.blocking:
        preflight_output.refuse(checked, spec.run_dir, written=not args.dry_run)


def _check_config(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(config_module.load(args.config, args.overrides).to_dict(), sort_keys=False), end="")
    return 0


def _validate_data(args: argparse.Namespace) -> int:
    from runner.preflight import validate_data

    config = config_module.load(args.config, args.overrides) if args.config else None
    files = args.files or ([config.data.train, *([config.data.valid] if config.data.valid else [])] if config else [])
    return validate_data.main(files, args.format or (config.data.format if config else "auto"), config)


def _job_command(args: argparse.Namespace) -> int:
    """status, logs, cancel: the run's latest scheduler job, asked through its own backend."""
    from runner.backends import submit

    if args.command == "logs":
        return submit.logs(args.run_dir, args.follow)
    return submit.status(args.run_dir) if args.command == "status" else submit.cancel(args.run_dir)


def _generate(args: argparse.Namespace) -> int:
    from runner.use import generate

    return generate.generate(args)


def _merge(args: argparse.Namespace) -> int:
    from runner.use import merge

    return merge.main(args.run_dir)


def _monitor(args: argparse.Namespace) -> int:
    from runner.reports import monitor

    return monitor.main(args)


def _report(args: argparse.Namespace) -> int:
    from runner.reports import html_report

    return html_report.main(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": _train, "preflight": _preflight, "check-config": _check_config, "validate-data": _validate_data,
    "status": _job_command, "logs": _job_command, "cancel": _job_command,
    "generate": _generate, "merge": _merge, "monitor": _monitor, "report": _report,
}


def _spec(args: argparse.Namespace) -> JobSpec:
    config = config_module.load(args.config, args.overrides)  # every config problem, before anything else
    return JobSpec(config=config, config_path=Path(args.config).resolve(), overrides=tuple(args.overrides),
                   fresh=getattr(args, "fresh", False), strict_env=args.strict_env, cwd=Path(os.getcwd()),
                   submission_id=jobs.new_submission_id())


if __name__ == "__main__":
    sys.exit(main())
