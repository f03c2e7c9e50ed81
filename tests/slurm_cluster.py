"""A real one-node Slurm cluster for the integration tests: munge, slurmctld and slurmd on this machine.

Debian's slurm-wlm and munge (installed by `.ci/run`) run from a configuration written into a
temporary directory; clients find it through SLURM_CONF. `python -m tests.slurm_cluster DIR`
starts one by hand and prints the SLURM_CONF line to export.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MUNGE_SOCKET_DIR = Path("/run/munge")
MUNGE_KEY = Path("/etc/munge/munge.key")
REQUIRED_COMMANDS = ("slurmctld", "slurmd", "sbatch", "munged")


@dataclass(frozen=True)
class Cluster:
    directory: Path
    conf: Path
    partition: str
    node: str

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *argv: str) -> str:
        return subprocess.run(argv, env=self.env, check=True, capture_output=True, text=True).stdout

    def stop(self) -> None:
        subprocess.run(["scontrol", "shutdown"], env=self.env, capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld"):
            pid_file = self.directory / f"{name}.pid"
            _wait_gone(pid_file)


def missing() -> str | None:
    """Why a cluster cannot start here, or None."""
    absent = [name for name in REQUIRED_COMMANDS if shutil.which(name) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd and munged needs root"
    return None


def start(directory: Path, *, cpus: int | None = None) -> Cluster:
    directory.mkdir(parents=True, exist_ok=True)
    _start_munge()
    node = socket.gethostname().split(".")[0]
    cpus = cpus or os.cpu_count() or 1
    for sub in ("state", "spool", "log"):
        (directory / sub).mkdir(exist_ok=True)
    conf = directory / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=lockstep-test",
                f"SlurmctldHost={node}",
                "SlurmUser=root",
                "AuthType=auth/munge",
                f"StateSaveLocation={directory / 'state'}",
                f"SlurmdSpoolDir={directory / 'spool'}",
                f"SlurmctldPidFile={directory / 'slurmctld.pid'}",
                f"SlurmdPidFile={directory / 'slurmd.pid'}",
                f"SlurmctldLogFile={directory / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={directory / 'log' / 'slurmd.log'}",
                "SlurmctldPort=16817",
                "SlurmdPort=16818",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "JobCompType=jobcomp/none",
                "AccountingStorageType=accounting_storage/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "MpiDefault=none",
                "ReturnToService=2",
                "SchedulerType=sched/backfill",
                "KillWait=30",
                "MinJobAge=600",
                f"NodeName={node} CPUs={cpus} RealMemory=8000 State=UNKNOWN",
                f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE GraceTime=5 State=UP",
                "",
            ]
        )
    )
    cluster = Cluster(directory=directory, conf=conf, partition="debug", node=node)
    subprocess.run(["slurmctld", "-f", str(conf)], env=cluster.env, check=True)
    subprocess.run(["slurmd", "-f", str(conf)], env=cluster.env, check=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=cluster.env, capture_output=True, text=True)
        if state.returncode == 0 and state.stdout.strip() == "idle":
            return cluster
        time.sleep(0.5)
    logs = "\n".join((directory / "log" / name).read_text()[-2000:] for name in ("slurmctld.log", "slurmd.log") if (directory / "log" / name).exists())
    cluster.stop()
    raise RuntimeError(f"the Slurm node did not become idle within 60 s:\n{logs}")


def _start_munge() -> None:
    if (MUNGE_SOCKET_DIR / "munge.socket.2").exists() and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return
    if not MUNGE_KEY.exists():
        subprocess.run(["mungekey", "--create"], check=True)
    shutil.chown(MUNGE_KEY, "munge", "munge")
    MUNGE_KEY.chmod(0o400)
    MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force"], check=True)


def _wait_gone(pid_file: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while pid_file.exists() and time.monotonic() < deadline:
        try:
            os.kill(int(pid_file.read_text().strip() or 0), 0)
        except (ProcessLookupError, ValueError):
            return
        time.sleep(0.2)


if __name__ == "__main__":
    why = missing()
    if why:
        sys.exit(f"cannot start a Slurm cluster: {why}")
    started = start(Path(sys.argv[1]).resolve())
    print(f"export SLURM_CONF={started.conf}")
