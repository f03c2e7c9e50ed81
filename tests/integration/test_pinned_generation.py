"""The demo end to end in a separate environment with the library set pinned for Modal.

torch 2.5.1, transformers 4.46.3, trl 0.11.4, peft 0.13.2, accelerate 1.0.1, datasets 3.0.1:
`make test` builds that environment (.venv-pinned) and points LOCKSTEP_PINNED_PYTHON at it.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from tests.helpers import DEMO_CONFIG, REPO_ROOT, run_lockstep, start_lockstep
from tests.integration.run_checks import (
    GENERATE_SCRIPT,
    assert_complete_run,
    assert_same_training,
    logged_step,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.pinned]

PINNED = {"torch": "2.5.1", "transformers": "4.46.3", "trl": "0.11.4", "peft": "0.13.2", "accelerate": "1.0.1", "datasets": "3.0.1"}


def test_demo_runs_with_the_pinned_generation(pinned_python, tmp_path):
    run_dir = tmp_path / "pinned"
    result = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", python=pinned_python)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_complete_run(run_dir)
    packages = json.loads((run_dir / "manifest.json").read_text())["packages"]
    for name, version in PINNED.items():
        assert packages[name].split("+")[0] == version, (name, packages[name])

    out = subprocess.run([pinned_python, "-c", GENERATE_SCRIPT, str(run_dir)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().startswith("The capital of France is")


@pytest.mark.extended  # ~90 s; the resume code is the same in both generations, and make test resumes in the current one
def test_exact_resume_with_the_pinned_generation(pinned_python, tmp_path):
    """A SIGKILL, then a SIGTERM, then a resume: the same result as an uninterrupted run (deterministic mode)."""
    args = ("--set", "train.max_steps=40", "--set", "train.deterministic=true")
    reference = tmp_path / "reference"
    result = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={reference}", *args, python=pinned_python)
    assert result.returncode == 0, result.stderr[-3000:]

    run_dir = tmp_path / "interrupted"
    command = ("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", *args)
    for at_step, stop, expected_code in ((13, signal.SIGKILL, -signal.SIGKILL), (30, signal.SIGTERM, 75)):
        log = tmp_path / f"{stop.name}.log"
        process = start_lockstep(*command, stderr_to=log, python=pinned_python)
        wait_until(lambda: logged_step(run_dir) >= at_step, process, f"step {at_step}")
        process.send_signal(stop)
        assert process.wait(timeout=300) == expected_code, log.read_text()[-3000:]
    result = run_lockstep(*command, python=pinned_python)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from step-000000" in result.stderr
    assert_same_training(run_dir, reference)
