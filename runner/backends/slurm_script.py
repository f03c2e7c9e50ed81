"""The sbatch script of a run: resources as #SBATCH lines, then one srun step per node running the
node launcher (runner.job.launch: torchrun, the rendezvous on the first node) in the chosen container.

The script forwards Slurm's signals to the step and decides what happens after a stop:
- SIGUSR2 is the time-limit notice (`--signal=B:USR2@notice`): the training checkpoints, exits 75,
  and the job requeues itself, at most `slurm.max_requeues` times;
- SIGTERM comes from preemption, `scontrol requeue` or `scancel`: the training checkpoints and
  exits 75, and Slurm decides whether the job comes back.
Both are recorded in RUN/jobs/<id>/events.jsonl. Every value is shell-quoted; hostile paths
(spaces, quotes, `$`, `;`) stay one word.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner.config import RunConfig
from runner.config.placement import slurm_time
from runner.job import arguments
from runner.util import shell


@dataclass(frozen=True, kw_only=True)
class ScriptInputs:
    config: RunConfig
    job_dir: Path  # RUN/jobs/<submission_id>: the script, the config snapshot, logs, events
    submission_id: str
    launch: tuple[str, ...]  # the command each node runs, container included, before the launcher's own arguments
    launcher_args: tuple[str, ...]  # runner.job.launch's arguments, then `--` and the job's
    resubmit: str  # the command a user runs to continue after max_requeues
    submit_argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)  # exported before the step, besides the config's distributed.env
    before_step: tuple[str, ...] = ()  # shell lines run once, on the first node, before the step (the container's set-up)


def sbatch_lines(config: RunConfig) -> list[str]:
    """The #SBATCH options; values here are numbers and Slurm names (checked by the config)."""
    res, slurm = config.resources, config.slurm
    options = [
        f"--job-name=lockstep-{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(config.output_dir).name) or 'run'}",
        f"--nodes={res.nodes}",
        "--ntasks-per-node=1",  # one launcher per node; torchrun starts the processes
        f"--cpus-per-task={res.cpus_per_node}",
    ]
    if res.gpus_per_node:
        options.append(f"--gpus-per-node={res.gpu_type + ':' if res.gpu_type else ''}{res.gpus_per_node}")
    if res.memory_gb:
        options.append(f"--mem={res.memory_gb}G")
    if res.time_limit_s is not None:
        options.append(f"--time={slurm_time(res.time_limit_s)}")
    for name in ("partition", "account", "qos", "constraint"):
        value = getattr(slurm, name)
        if value:
            options.append(f"--{name}={value}")
    options += [f"--signal=B:USR2@{slurm.notice_seconds}", "--requeue", "--open-mode=append"]
    return [f"#SBATCH {option}" for option in options]


def render(inputs: ScriptInputs) -> str:
    config = inputs.config
    env = {"LOCKSTEP_SUBMISSION": inputs.submission_id, **inputs.env, **config.distributed.env}
    step = ["srun", "--kill-on-bad-exit=1", "--ntasks-per-node=1",
            f"--cpus-per-task={config.resources.cpus_per_node}",
            *inputs.launch, *inputs.launcher_args]
    max_requeues = config.slurm.max_requeues
    lines = [
        "#!/bin/bash",
        *sbatch_lines(config),
        f"# lockstep job for the run in {_comment(str(inputs.job_dir.parent.parent))}",
        f"# submitted with: {_comment(shell.join(inputs.submit_argv))}",
        "# SIGUSR2 (time-limit notice): checkpoint, then requeue this job; SIGTERM (preemption, scontrol",
        "# requeue, scancel): checkpoint, and Slurm decides. Either way the next start resumes.",
        *config.slurm.setup,  # the user's own shell lines (module load ...), as written, before `set -u` (Lmod trips on it)
        "set -uo pipefail",
        "",
        f"job_dir={shell.quote(str(inputs.job_dir))}",
        *[f"export {name}={shell.quote(value)}" for name, value in env.items()],
        "",
        "event() {",
        "    printf '{\"time\": \"%s\", \"job\": \"%s\", \"restart\": %s, \"event\": \"%s\"}\\n' \\",
        '        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SLURM_JOB_ID" "${SLURM_RESTART_COUNT:-0}" "$1" >> "$job_dir/events.jsonl"',
        "}",
        "stop_reason=",
        "step=",
        "on_signal() {  # $1: why the job is stopping, $2: the signal passed on to the training",
        '    stop_reason=$1',
        '    event "signal: $1"',
        '    if [ -n "$step" ]; then kill -s "$2" "$step" 2>/dev/null; fi',
        "}",
        "trap 'on_signal time-limit USR2' USR2",
        "trap 'on_signal preempted TERM' TERM",
        "",
        'event "start on $(hostname)"',
        *inputs.before_step,
    ]
    if config.resources.nodes > 1:
        lines.append('first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)')
    lines += [
        shell.join(step).replace(shell.quote(FIRST_NODE), '"$first_node"') + " &",
        "step=$!",
        "while :; do",
        '    wait "$step"; code=$?',
        "    # a trapped signal interrupts wait (code > 128) while the training still runs: wait again",
        '    if [ "$code" -gt 128 ] && kill -0 "$step" 2>/dev/null; then continue; fi',
        "    # the step ended just as the signal came: its own status is still there to collect",
        '    if [ "$code" -gt 128 ] && [ -n "$stop_reason" ]; then wait "$step" 2>/dev/null && code=0 || { last=$?; [ "$last" -ne 127 ] && code=$last; }; fi',
        "    break",
        "done",
        "",
        'if [ "$code" -eq 75 ] && [ "$stop_reason" = time-limit ]; then',
        f'    if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {max_requeues} ]; then',
        '        event "requeue: time limit"',
        f'        echo "lockstep: time limit near: checkpoint written; requeueing (restart $((${{SLURM_RESTART_COUNT:-0}} + 1)) of {max_requeues})"',
        '        scontrol requeue "$SLURM_JOB_ID"',
        "        exit 0",
        "    fi",
        '    event "stopped: time limit, max_requeues reached"',
        f"    echo {shell.quote(f'lockstep: time limit reached and slurm.max_requeues ({max_requeues}) used up; continue with: {inputs.resubmit}')} >&2",
        'elif [ "$code" -eq 75 ]; then',
        '    event "stopped: ${stop_reason:-signal}"',
        '    echo "lockstep: stopped by Slurm (preemption, requeue or cancel): checkpoint written; a requeued job resumes from it"',
        "fi",
        'event "exit $code"',
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


FIRST_NODE = "@first-node@"  # stands for the first node's hostname, known only inside the job


def launcher_args(config: RunConfig, job_args: Sequence[str]) -> tuple[str, ...]:
    res = config.resources
    args = ["-m", arguments.LAUNCH_MODULE, f"--nnodes={res.nodes}", f"--nproc-per-node={res.processes_per_node}"]
    if res.nodes > 1:
        args.append(f"--master-addr={FIRST_NODE}")
    if config.distributed.port:
        args.append(f"--master-port={config.distributed.port}")
    return (*args, "--", *job_args)


def _comment(text: str) -> str:
    return text.replace("\n", " ")
