"""`python -m runner.job.launch`: one node's training processes under torchrun, and their true exit code.

Every backend starts the job through this module: one process runs the in-job entry point
(`runner.job`) directly; several run under torchrun (DDP/FSDP), with the rendezvous on the
first node. Two torchrun habits are corrected here:

- a worker that stopped after a checkpoint exits 75 ("requeue me"), but torchrun reports any
  non-zero worker as its own exit 1; the workers record their codes, and when all of this
  node's workers stopped that way, the node exits 75 too;
- a stop signal (the scheduler's SIGTERM, the time-limit notice SIGUSR2, Ctrl-C) goes to the
  workers themselves, so each checkpoints at its next step boundary; torchrun ignores SIGUSR2
  (older releases would die of it) and SIGUSR1 (NCCL's).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from runner.errors import StoppedForRequeue, run_command
from runner.job import entry
from runner.job.arguments import JOB_MODULE, LAUNCH_MODULE
from runner.job.entry import EXIT_DIR_ENV

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)
DEFAULT_PORT = 29500
PORT_RANGE = (20000, 40000)  # ports derived from a job id fall in here


def torchrun_argv(*, nnodes: int, nproc: int, node_rank: int, master_addr: str | None, master_port: int, job_args: Sequence[str]) -> list[str]:
    """The torchrun command for this node: a fixed rendezvous on the first node, no restarts
    (a restart is the scheduler's decision, and it resumes from the checkpoint)."""
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc-per-node={nproc}", "--max-restarts=0"]
    if master_addr is None:
        argv.append("--standalone")  # one node: torchrun picks a free port itself
    else:
        argv += [f"--node-rank={node_rank}", f"--master-addr={master_addr}", f"--master-port={master_port}"]
    return argv + ["-m", JOB_MODULE, *job_args]


def port_for(job_id: str | None) -> int:
    """A rendezvous port for a scheduler job, so two jobs sharing a node do not collide."""
    if not job_id or not job_id.isdigit():
        return DEFAULT_PORT
    low, high = PORT_RANGE
    return low + int(job_id) % (high - low)


def node_exit_code(torchrun_code: int, exit_dir: Path, nproc: int) -> int:
    """0 on success; 75 when every worker here stopped after a checkpoint; torchrun's code otherwise."""
    if torchrun_code == 0:
        return 0
    codes = [path.read_text().strip() for path in exit_dir.glob("rank-*")]
    if len(codes) == nproc and all(code == str(StoppedForRequeue.exit_code) for code in codes):
        return StoppedForRequeue.exit_code
    return torchrun_code


def run(*, nnodes: int, nproc: int, node_rank: int, master_addr: str | None, master_port: int, job_args: Sequence[str]) -> int:
    if nnodes == 1 and nproc == 1:
        return entry.main(job_args)
    with tempfile.TemporaryDirectory(prefix="lockstep-exit-") as exit_dir:
        env = dict(os.environ, **{EXIT_DIR_ENV: exit_dir})
        # torchrun would set 1 thread per worker; a CPU run wants the node's cores shared out.
        env.setdefault("OMP_NUM_THREADS", str(max(1, _cpus() // nproc)))
        argv = torchrun_argv(nnodes=nnodes, nproc=nproc, node_rank=node_rank, master_addr=master_addr,
                             master_port=master_port, job_args=job_args)
        process = subprocess.Popen(argv, env=env, preexec_fn=_ignore_notices)

        def forward(signum: int, _frame: FrameType | None) -> None:
            for pid in _children(process.pid):
                _send(pid, signum)

        previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
        try:
            code = process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return node_exit_code(code if code >= 0 else 128 - code, Path(exit_dir), nproc)


def _ignore_notices() -> None:
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)  # the workers install their own handlers


def _children(pid: int) -> list[int]:
    """The direct children of `pid` (torchrun's workers), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while being read
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _cpus() -> int:
    for name in ("SLURM_CPUS_ON_NODE", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {LAUNCH_MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--nproc-per-node", type=int, default=1)
    parser.add_argument("--node-rank", type=int, default=int(os.environ.get("SLURM_NODEID", "0")),
                        help="this node's rank (default: SLURM_NODEID, else 0)")
    parser.add_argument("--master-addr", help="the first node's address (several nodes); omit on one node")
    parser.add_argument("--master-port", type=int, help="the rendezvous port (default: derived from SLURM_JOB_ID)")
    parser.add_argument("job_args", nargs=argparse.REMAINDER, help="-- then the arguments of `python -m runner.job`")
    args = parser.parse_args(argv)
    job_args = args.job_args[1:] if args.job_args[:1] == ["--"] else args.job_args
    port = args.master_port or port_for(os.environ.get("SLURM_JOB_ID"))
    return run_command(lambda: run(nnodes=args.nnodes, nproc=args.nproc_per_node, node_rank=args.node_rank,
                                   master_addr=args.master_addr, master_port=port, job_args=job_args))


if __name__ == "__main__":
    sys.exit(main())
