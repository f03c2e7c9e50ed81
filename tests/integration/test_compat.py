"""`nox -s compat` for real: the cpu stack installed from its lock into a fresh environment,
checked and fine-tuned; a stack that cannot be locked here is reported as skipped, with why."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow

EXPECTED_CHECKS = {"lock", "install --require-hashes", "pip check", "installed = lock", "fine-tune the demo (20 steps)"}


@pytest.mark.extended  # ~3 min: a fresh venv from the cpu lock and the demo in it, which `make test`'s own set-up and demo runs repeat
def test_compat_passes_for_cpu_and_skips_an_unlocked_stack_with_the_reason(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "runner.stacks.compat", "cpu", "cu121-torch251", "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    cpu = json.loads((tmp_path / "cpu.json").read_text())
    assert cpu["status"] == "pass"
    checks = {c["name"]: c for c in cpu["checks"]}
    assert EXPECTED_CHECKS <= set(checks) and all(c["status"] == "pass" for c in checks.values())
    assert sum(name.startswith("known-bad: ") for name in checks) >= 5
    assert "eval loss" in checks["fine-tune the demo (20 steps)"]["detail"]
    assert "| pip check | pass |" in (tmp_path / "cpu.md").read_text()

    unlocked = json.loads((tmp_path / "cu121-torch251.json").read_text())
    assert unlocked["status"] == "skip"
    assert "nox -s lock -- cu121-torch251" in unlocked["checks"][0]["detail"]
