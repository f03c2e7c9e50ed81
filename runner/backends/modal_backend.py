"""`--backend modal`: the run as a Modal function call, detached (`spawn`), so a dropped client never
cancels it. The plan (modal_plan) is written to RUN/jobs/<id>/modal-plan.json; submitting it is
`python -m runner.backends.modal_backend PLAN`, which is also how to submit a plan again by hand."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from runner import stacks
from runner.backends import jobs, limits, modal_plan
from runner.backends.base import JobHandle, JobState, Started, Submission
from runner.errors import BackendError, LockstepError, run_command
from runner.problems import Check
from runner.spec import JobSpec
from runner.util import console, shell

PLAN_FILE = "modal-plan.json"


class Modal:
    name: ClassVar[str] = "modal"
    detached: ClassVar[bool] = True

    def check(self, spec: JobSpec) -> list[Check]:
        problems = limits.common(spec.config, self.name) + limits.modal(spec.config)
        stack = _stack(spec)
        if stack.lock_problem():  # a stack problem (exit 8, as everywhere), not one of Modal's limits
            problems.append(Check(
                name="lock", status="error", summary=str(stack.lock_problem()),
                fix=(f"where {stack.extra_index_url or stack.index_url} is reachable, or take the lock the project's CI makes "
                     f"({stacks.LOCK_WORKFLOW}); or set stack: cu121-torch251-pypi (the same library set with PyPI's "
                     "CUDA build of torch 2.5.1)"),
            ))
        if stack.accelerator == "metal":
            problems.append(limits.problem(summary=f"stack {stack.name} is for Apple silicon",
                                    fix="choose a Linux stack for Modal, e.g. stack: cu121-torch251"))
        try:
            import modal  # noqa: F401
        except ImportError:
            problems.append(limits.problem(status="warning", summary="the modal package is not installed here",
                                    fix="pip install modal (and `modal token new` once), or --dry-run to see the plan"))
        return problems

    def prepare(self, spec: JobSpec) -> Submission:
        plan = modal_plan.make(spec, _stack(spec))
        plan_file = spec.job_dir / PLAN_FILE
        return Submission(files={PLAN_FILE: json.dumps(plan, indent=2) + "\n"},
                          argv=(sys.executable, "-m", "runner.backends.modal_backend", str(plan_file)),
                          create_dirs=(str(spec.job_dir),))

    def submit(self, spec: JobSpec, submission: Submission) -> Started:
        plan = json.loads(submission.files[PLAN_FILE])
        try:
            call_id, app_id = spawn(plan)
        except Exception as exc:  # Modal's own errors (no token, quota...), with the plan kept to retry
            raise BackendError(f"Modal refused the job: {type(exc).__name__}: {exc}\nthe plan is in {spec.job_dir / PLAN_FILE}; "
                               f"submit it again with: {shell.join(submission.argv)}") from exc
        return Started(handle=JobHandle(backend=self.name, job_id=call_id, job_dir=spec.job_dir, submitted_at=jobs.now(),
                                        details={"app_id": app_id, "fetch_results": plan["fetch_results"]}))

    def state(self, handle: JobHandle) -> JobState:
        import modal

        call = modal.FunctionCall.from_id(handle.job_id)
        try:
            call.get(timeout=0)
        except TimeoutError:
            return JobState(state="RUNNING", reason="or waiting for a GPU; `lockstep logs` shows which")
        except (modal.exception.AuthError, modal.exception.ConnectionError) as exc:  # Modal was not asked: unknown, not failed
            return JobState(state="UNKNOWN", reason=f"could not ask Modal: {type(exc).__name__}: {exc}")
        except Exception as exc:  # the call's own failure, as Modal reports it
            return JobState(state="FAILED", reason=f"{type(exc).__name__}: {exc}")
        return JobState(state="COMPLETED", reason="fetch the run: " + shell.join(handle.details.get("fetch_results", [])))

    def cancel(self, handle: JobHandle) -> None:
        import modal

        modal.FunctionCall.from_id(handle.job_id).cancel()

    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]:
        argv = [sys.executable, "-m", "modal", "app", "logs", handle.details["app_id"]]
        with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as process:
            assert process.stdout is not None
            yield from process.stdout


def spawn(plan: dict[str, Any]) -> tuple[str, str]:
    """Upload the inputs, start the App detached and spawn the training call: (call id, app id)."""
    import modal

    from runner.backends import modal_app

    app, function = modal_app.build(plan)
    (volume_name,) = plan["function"]["volumes"].values()
    volume = modal.Volume.from_name(volume_name, create_if_missing=True)
    if plan["uploads"]:
        with volume.batch_upload(force=True) as batch:
            for item in plan["uploads"]:
                (batch.put_directory if item["kind"] == "dir" else batch.put_file)(item["local"], item["remote"])
    with modal.enable_output(), app.run(detach=plan["detach"]):
        call = function.spawn(plan["call"], volume_name)
    return call.object_id, app.app_id


def _stack(spec: JobSpec) -> stacks.Stack:
    return stacks.get(spec.config.stack or modal_plan.DEFAULT_STACK)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.backends.modal_backend", description="Submit a lockstep Modal plan.")
    parser.add_argument("plan", type=Path, help="RUN/jobs/<id>/modal-plan.json")
    args = parser.parse_args(argv)
    return run_command(lambda: _submit_plan(args.plan))


def _submit_plan(plan_file: Path) -> int:
    try:
        call_id, app_id = spawn(json.loads(plan_file.read_text()))
    except LockstepError:
        raise
    except Exception as exc:  # Modal's own errors (no token, quota...) are shown as they are
        raise BackendError(f"Modal refused the job: {type(exc).__name__}: {exc}") from exc
    print(call_id)
    console.say(f"spawned {call_id} in app {app_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
