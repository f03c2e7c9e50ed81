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

from runner import limits, stacks
from runner.backends import jobs, modal_plan
from runner.backends.base import JobHandle, JobSpec, JobState, Submission
from runner.errors import BackendError, LockstepError, report
from runner.problems import Problem

PLAN_FILE = "modal-plan.json"


class Modal:
    name: ClassVar[str] = "modal"

    def check(self, spec: JobSpec) -> list[Problem]:
        problems = limits.modal(spec.config)
        stack = _stack(spec)
        if stack.lock_problem():
            problems.append(Problem(
                check="modal.stack", message=str(stack.lock_problem()),
                fix="where its indexes are reachable; or set stack: cu121-torch251-pypi"
                    " (the same library set with PyPI's CUDA build of torch 2.5.1)",
            ))
        if stack.accelerator == "metal":
            problems.append(Problem(check="modal.stack", message=f"stack {stack.name} is for Apple silicon",
                                    fix="choose a Linux stack for Modal, e.g. stack: cu121-torch251"))
        try:
            import modal  # noqa: F401
        except ImportError:
            problems.append(Problem(check="modal.sdk", severity="warning", message="the modal package is not installed here",
                                    fix="pip install modal (and `modal token new` once), or --dry-run to see the plan"))
        return problems

    def prepare(self, spec: JobSpec) -> Submission:
        plan = modal_plan.make(spec, _stack(spec))
        plan_file = spec.job_dir / PLAN_FILE
        return Submission(files={PLAN_FILE: json.dumps(plan, indent=2) + "\n"},
                          argv=(sys.executable, "-m", "runner.backends.modal_backend", str(plan_file)),
                          create_dirs=(str(spec.job_dir),))

    def submit(self, spec: JobSpec, submission: Submission) -> JobHandle:
        plan = json.loads(submission.files[PLAN_FILE])
        try:
            call_id, app_id = spawn(plan)
        except Exception as exc:  # Modal's own errors (no token, quota...), with the plan kept to retry
            raise BackendError(f"Modal refused the job: {type(exc).__name__}: {exc}\nthe plan is in {spec.job_dir / PLAN_FILE}; "
                               f"submit it again with: {' '.join(submission.argv)}") from exc
        return JobHandle(backend=self.name, job_id=call_id, job_dir=spec.job_dir, submitted_at=jobs.now(),
                         details={"app_id": app_id, "fetch_results": plan["fetch_results"]})

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
        return JobState(state="COMPLETED", reason="fetch the run: " + " ".join(handle.details.get("fetch_results", [])))

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
    try:
        call_id, app_id = spawn(json.loads(args.plan.read_text()))
    except LockstepError as exc:
        return report(exc)
    except Exception as exc:  # Modal's own errors (no token, quota...) are shown as they are
        return report(BackendError(f"Modal refused the job: {type(exc).__name__}: {exc}"))
    print(call_id)
    print(f"lockstep: spawned {call_id} in app {app_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
