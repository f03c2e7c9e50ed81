"""`--backend local`: the run trains here, in the foreground: in this process; under torchrun for several
processes (resources.processes_per_node); or in the environment of the config's stack when that is not
this one (made from its lock on first use, runner.stacks.venv)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import ClassVar

from runner import stacks
from runner.backends import limits
from runner.backends.base import JobHandle, JobState, Started, Submission, no_job
from runner.job import arguments
from runner.problems import Check
from runner.spec import JobSpec
from runner.stacks import venv as stack_venv
from runner.util import console, foreground


class Local:
    name: ClassVar[str] = "local"
    detached: ClassVar[bool] = False

    def check(self, spec: JobSpec) -> list[Check]:
        return limits.common(spec.config, self.name)

    def prepare(self, spec: JobSpec) -> Submission:
        """The command that trains the run: this Python (or the config's stack's), one process or torchrun's."""
        job_args = _job_arguments(spec)
        stack = stack_venv.target(spec.config)
        if stack is not None:
            return Submission(files={}, argv=(str(stack_venv.python(stacks.get(stack))), "-m", arguments.JOB_MODULE, *job_args))
        processes = spec.config.resources.processes_per_node
        if processes == 1 or _inside_torchrun():
            return Submission(files={}, argv=(sys.executable, "-m", arguments.JOB_MODULE, *job_args))
        from runner.job import launch

        return Submission(files={}, argv=tuple(launch.torchrun_argv(nnodes=1, nproc=processes, node_rank=0, master_addr=None,
                                                                   master_port=launch.DEFAULT_PORT, job_args=job_args)))

    def submit(self, spec: JobSpec, submission: Submission) -> Started:
        stack = stack_venv.target(spec.config)
        if stack is not None:
            python = stack_venv.ensure(stacks.get(stack))
            console.say(f"training in the environment of stack {stack} ({python.parent.parent})")
            return Started(exit_code=foreground.run(list(submission.argv), env=stack_venv.job_environment()))
        processes = spec.config.resources.processes_per_node
        if processes == 1 or _inside_torchrun():  # in this process: its errors are this command's
            from runner.job import entry

            return Started(exit_code=entry.train(spec.config, backend=self.name, fresh=spec.fresh, strict_env=spec.strict_env))
        from runner.job import launch

        return Started(exit_code=launch.run(nnodes=1, nproc=processes, node_rank=0, master_addr=None, master_port=launch.DEFAULT_PORT,
                                            job_args=_job_arguments(spec)))

    def state(self, handle: JobHandle) -> JobState:
        raise no_job(self.name)

    def cancel(self, handle: JobHandle) -> None:
        raise no_job(self.name)

    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]:
        raise no_job(self.name)


def _job_arguments(spec: JobSpec) -> list[str]:
    return arguments.entry_arguments(str(spec.config_path), backend=Local.name, overrides=spec.overrides, fresh=spec.fresh,
                                     strict_env=spec.strict_env)


def _inside_torchrun() -> bool:
    """Already one of torchrun's workers (`torchrun -m runner train ...`): train as that process."""
    return "WORLD_SIZE" in os.environ
