"""`--backend modal` up to Modal's servers, which cannot be reached from here: the plan (golden file),
the App and function objects built from it, the limits checked before any network call, and the
function's body, run here in place of Modal's container, training through the same entry point.

Regenerate the golden plan after an intended change: LOCKSTEP_REGEN_GOLDEN=1 pytest tests/unit/backends/test_modal_backend.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner import config as config_module
from runner.backends.modal_backend import PLAN_FILE, Modal
from runner.spec import JobSpec
from tests.helpers import DEMO_CONFIG, REPO_ROOT, hostile_project

modal = pytest.importorskip("modal", reason="the modal client is part of the cpu stack (lockfiles/cpu.in)")

HOSTILE = "we ird $dir; 'q' \"dq\""
GPU_RUN = ["stack=cu121-torch251-pypi", "resources.gpu_type=H100", "resources.gpus_per_node=8", "resources.processes_per_node=8",
           "resources.time_limit=6h", "modal.secrets=[huggingface-secret]", "modal.volume=lockstep-runs",
           "distributed.env.NCCL_DEBUG=WARN"]
UNREACHABLE = {"MODAL_SERVER_URL": "http://127.0.0.1:9", "MODAL_TOKEN_ID": "none", "MODAL_TOKEN_SECRET": "none"}


def spec(tmp_path: Path, overrides: list[str]) -> JobSpec:
    config_path = hostile_project(tmp_path, HOSTILE, "runs/my run")
    cwd = config_path.parent
    return JobSpec(config=config_module.load(config_path, overrides), config_path=config_path, overrides=tuple(overrides),
                   cwd=cwd, submission_id="20261123T120000000000Z")


def plan_of(run: JobSpec) -> dict:
    return json.loads(Modal().prepare(run).files[PLAN_FILE])


def test_plan_matches_the_golden_file(tmp_path, golden):
    text = json.dumps(plan_of(spec(tmp_path, GPU_RUN)), indent=2) + "\n"
    golden("modal-plan.json", text.replace(str(tmp_path), "{tmp}").replace(str(REPO_ROOT), "{repo}"))


def test_the_app_and_function_carry_the_plan(tmp_path):
    from runner.backends import modal_app

    plan = plan_of(spec(tmp_path, GPU_RUN))
    app, function = modal_app.build(plan)
    assert app.name == "lockstep"
    assert function._spec_.gpus == "H100:8"  # checked against Modal's 8 per container before this point
    (volume,) = function._spec_.volumes.values()
    assert list(function._spec_.volumes) == ["/runs"] and "lockstep-runs" in repr(volume)
    assert [repr(s) for s in function._spec_.secrets] == ["modal.Secret.from_name('huggingface-secret')"]
    options = modal_app.function_options(plan, volume, [], object())
    assert options["timeout"] == 6 * 3600 and options["gpu"] == "H100:8" and options["cpu"] == 32.0
    retries = options["retries"]
    assert (retries.max_retries, retries.backoff_coefficient) == (3, 2.0)
    # the image installs the stack's lock file itself (hash-checked), then adds lockstep's code
    lock = REPO_ROOT / "lockfiles" / "cu121-torch251-pypi.txt"
    assert plan["image"]["requirements"] == str(lock) and plan["image"]["python"] == "3.11"
    assert plan["uploads"] == [{"local": str(tmp_path / "data $shared" / "train.jsonl"),
                                "remote": "runs/my run/inputs/train.jsonl", "kind": "file"}]
    assert plan["call"]["config"]["data"]["train"] == "/runs/runs/my run/inputs/train.jsonl"


def test_several_nodes_make_a_clustered_function(tmp_path):
    from runner.backends import modal_app

    plan = plan_of(spec(tmp_path, [*GPU_RUN, "resources.nodes=2"]))
    assert plan["function"]["cluster_size"] == 2 and plan["call"]["nodes"] == 2
    _, function = modal_app.build(plan)
    assert function._spec_.gpus == "H100:8"


@pytest.mark.parametrize("overrides, expected", [
    (["resources.gpu_type=H100", "resources.gpus_per_node=10", "resources.processes_per_node=10"],
     "H100:10 exceeds Modal's 8 GPUs per container: use H100:8"),
    (["resources.time_limit=25h"], "exceeds Modal's 24 h per attempt"),
])
def test_limits_fail_before_any_network_call(overrides, expected, tmp_path):
    # Its own run directory: the config's runs/demo may hold the finished run of a `make train` before `make test`.
    sets = [arg for item in ["stack=cu121-torch251-pypi", f"output_dir={tmp_path / 'run'}", *overrides] for arg in ("--set", item)]
    result = subprocess.run([sys.executable, "-m", "runner", "train", str(DEMO_CONFIG), "--backend", "modal", *sets],
                            cwd=REPO_ROOT, capture_output=True, text=True, env=os.environ | UNREACHABLE | {"PYTHONPATH": str(REPO_ROOT)},
                            timeout=60)
    assert result.returncode == 10, result.stderr
    assert expected in result.stderr and "nothing was submitted" in result.stderr


def test_dry_run_prints_the_plan_without_any_network_call(tmp_path):
    result = subprocess.run([sys.executable, "-m", "runner", "train", str(DEMO_CONFIG), "--backend", "modal", "--dry-run",
                             "--set", "stack=cu121-torch251-pypi", "--set", f"output_dir={tmp_path / 'run'}"],
                            cwd=REPO_ROOT, capture_output=True, text=True, env=os.environ | UNREACHABLE | {"PYTHONPATH": str(REPO_ROOT)},
                            timeout=60)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout.split("\n", 1)[1].rsplit("# ---- submitted with", 1)[0])
    assert plan["function"]["timeout_s"] == 86400 and plan["detach"] is True
    assert not (tmp_path / "run").exists()  # nothing written


class VolumeStandIn:
    """Modal's volume service, which cannot be reached here: records reloads and commits."""

    calls: list[str] = []

    def __init__(self, name: str) -> None:
        self.name = name

    def reload(self) -> None:
        self.calls.append("reload")

    def commit(self) -> None:
        self.calls.append("commit")


@pytest.mark.slow
def test_the_function_body_trains_through_the_same_entry_point(tmp_path, monkeypatch):
    """Run here in place of Modal's container (the volume mounted at a temporary directory):
    the demo trains, and the volume is committed after every checkpoint and at the end."""
    from runner.backends import modal_app
    from runner.job import storage

    monkeypatch.setattr(modal_app.modal.Volume, "from_name", staticmethod(VolumeStandIn))
    for name in (storage.HOOK_ENV, "LOCKSTEP_SUBMISSION"):
        monkeypatch.setenv(name, "")  # the body sets them for its container; restored after the test
    monkeypatch.chdir(REPO_ROOT)
    run = spec(tmp_path, ["stack=cu121-torch251-pypi", "train.max_steps=6", "checkpoint.every_percent=50"])
    call = plan_of(run)["call"]
    call["run_dir"] = str(tmp_path / "volume" / "run")
    call["config"]["output_dir"] = call["run_dir"]
    call["config"]["data"]["train"] = str(tmp_path / "data $shared" / "train.jsonl")
    monkeypatch.setenv("LOCKSTEP_STACK", "cpu")
    summary = modal_app.remote_train(call, "lockstep-runs")
    assert summary["steps"] == 6
    manifest = json.loads((tmp_path / "volume" / "run" / "manifest.json").read_text())
    assert manifest["backend"] == "modal" and manifest["scheduler"]["LOCKSTEP_SUBMISSION"] == run.submission_id
    assert VolumeStandIn.calls == ["reload", "commit", "commit", "commit"]  # two checkpoints, then the end


def test_a_job_modal_cannot_be_asked_about_is_unknown_not_failed(tmp_path, monkeypatch):
    from runner.backends.base import JobHandle

    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))  # no token anywhere: the real client refuses
    handle = JobHandle(backend="modal", job_id="fc-01TESTTESTTESTTESTTESTTEST", job_dir=tmp_path, submitted_at="2026-12-01T00:00:00+00:00")
    state = Modal().state(handle)
    assert state.state == "UNKNOWN" and "could not ask Modal: AuthError" in state.reason
