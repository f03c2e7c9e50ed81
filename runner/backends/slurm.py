"""`--backend slurm`: the run as an sbatch job (runner.backends.slurm_script; its container step in
runner.backends.slurm_containers), submitted with
`sbatch --parsable`, watched through `scontrol show job --oneliner` (machine-readable KEY=VALUE)
and, once Slurm has forgotten the job, `sacct --parsable2`."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import yaml

from runner.backends import jobs, limits, slurm_containers
from runner.backends.base import JobHandle, JobState, Started, Submission
from runner.backends.slurm_script import ScriptInputs, launcher_args, render
from runner.errors import BackendError
from runner.job import arguments
from runner.problems import Check
from runner.rundir import CONFIG_FILE
from runner.spec import JobSpec
from runner.util import shell

SCRIPT = "job.sbatch"
SNAPSHOT = CONFIG_FILE  # in jobs/<id>/: the resolved config the job runs; later edits to the YAML cannot change a queued job


class Slurm:
    name: ClassVar[str] = "slurm"
    detached: ClassVar[bool] = True

    def check(self, spec: JobSpec) -> list[Check]:
        problems = limits.common(spec.config, self.name) + limits.slurm(spec.config, partition_limits(spec.config.slurm.partition))
        problems += slurm_containers.problems(spec)
        if shutil.which("sbatch") is None:
            problems.append(limits.problem(status="warning", summary="sbatch is not on this machine's PATH",
                                           fix="submit from a machine of the cluster (a login node), or --dry-run to see the script"))
        return problems

    def prepare(self, spec: JobSpec) -> Submission:
        config = spec.config
        script = spec.job_dir / SCRIPT
        submit_argv = ("sbatch", "--parsable", f"--output={_sbatch_pattern(log_file(spec.job_dir, '%j'))}", f"--chdir={spec.cwd}",
                       *config.slurm.sbatch_args, str(script))
        job_args = arguments.entry_arguments(str(spec.job_dir / SNAPSHOT), backend=self.name, strict_env=spec.strict_env)
        resubmit = shell.join(["lockstep", "train", str(spec.config_path), "--backend", self.name,
                               *[f"--set={item}" for item in spec.overrides]])
        inputs = ScriptInputs(config=config, job_dir=spec.job_dir, submission_id=spec.submission_id,
                              launch=slurm_containers.launch_prefix(spec), launcher_args=launcher_args(config, job_args),
                              resubmit=resubmit, submit_argv=submit_argv, env=slurm_containers.job_env(spec),
                              before_step=slurm_containers.before_step(spec))
        return Submission(files={SCRIPT: render(inputs), SNAPSHOT: yaml.safe_dump(config.to_dict(), sort_keys=False)},
                          argv=submit_argv, create_dirs=(str(spec.job_dir),))

    def submit(self, spec: JobSpec, submission: Submission) -> Started:
        slurm_containers.prepare_image(spec)
        try:
            result = subprocess.run(submission.argv, capture_output=True, text=True)
        except FileNotFoundError:
            raise BackendError(f"sbatch is not on this machine's PATH, nothing was submitted; submit from a machine of the "
                               f"cluster (a login node); the script is {spec.job_dir / SCRIPT}") from None
        if result.returncode != 0:
            raise BackendError(f"sbatch refused the job (exit {result.returncode}): {result.stderr.strip()}\n"
                               f"the script is {spec.job_dir / SCRIPT}; fix the config and submit again")
        job_id = result.stdout.strip().split(";")[0]  # --parsable: "ID" or "ID;CLUSTER"
        return Started(handle=JobHandle(backend=self.name, job_id=job_id, job_dir=spec.job_dir, submitted_at=jobs.now(),
                                        details={"log": str(log_file(spec.job_dir, job_id))}))

    def state(self, handle: JobHandle) -> JobState:
        shown = subprocess.run(["scontrol", "show", "job", handle.job_id, "--oneliner"], capture_output=True, text=True)
        if shown.returncode == 0 and shown.stdout.strip():
            fields = parse_key_values(shown.stdout)
            return JobState(state=fields.get("JobState", "UNKNOWN"), reason=fields.get("Reason", "").replace("None", ""),
                            restarts=int(fields["Restarts"]) if fields.get("Restarts", "").isdigit() else None,
                            exit_code=fields.get("ExitCode"))
        return _state_from_accounting(handle.job_id)

    def cancel(self, handle: JobHandle) -> None:
        result = subprocess.run(["scancel", handle.job_id], capture_output=True, text=True)
        if result.returncode != 0:
            raise BackendError(f"scancel {handle.job_id} failed: {result.stderr.strip()}")

    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]:
        log = log_file(handle.job_dir, handle.job_id)
        position = 0
        while True:
            if log.is_file():
                with log.open(encoding="utf-8", errors="replace") as stream:
                    stream.seek(position)
                    yield from stream
                    position = stream.tell()
            if not follow or not self.state(handle).active:
                return
            time.sleep(2)


def log_file(job_dir: Path, job_id: str) -> Path:
    """The job's output, all attempts appended (`%j` in the pattern sbatch is given)."""
    return job_dir / f"slurm-{job_id}.out"


def partition_limits(partition: str | None) -> dict[str, str] | None:
    """`scontrol show partition` as KEY -> VALUE (the default partition when none is named);
    None where Slurm cannot be asked (not a cluster machine)."""
    if shutil.which("scontrol") is None:
        return None
    argv = ["scontrol", "show", "partition", "--oneliner"] + ([partition] if partition else [])
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        if partition and "not found" in (result.stderr + result.stdout).lower():
            return {"PartitionName": partition, "State": "UNKNOWN (no such partition; sinfo lists them)"}
        return None
    records = [parse_key_values(line) for line in result.stdout.splitlines() if line.strip()]
    if partition:
        return records[0] if records else None
    defaults = [record for record in records if record.get("Default") == "YES"]
    return defaults[0] if defaults else None


def parse_key_values(line: str) -> dict[str, str]:
    """Slurm's one-line KEY=VALUE records (values have no spaces, except a few free-text fields we skip)."""
    fields = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def _state_from_accounting(job_id: str) -> JobState:
    result = subprocess.run(["sacct", "--jobs", job_id, "--allocations", "--noheader", "--parsable2",
                             "--format=State,Reason,Restarts,ExitCode"], capture_output=True, text=True)
    rows = [line.split("|") for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []
    if not rows:
        return JobState(state="UNKNOWN", reason="Slurm no longer lists the job and has no accounting record of it")
    state, reason, restarts, exit_code = (rows[-1] + ["", "", "", ""])[:4]
    return JobState(state=state.split()[0], reason=reason, restarts=int(restarts) if restarts.isdigit() else None, exit_code=exit_code)


def _sbatch_pattern(path: Path) -> str:
    """sbatch expands %j, %x... in --output; a literal % in the directory is written %%."""
    return str(path.parent).replace("%", "%%") + "/" + path.name
