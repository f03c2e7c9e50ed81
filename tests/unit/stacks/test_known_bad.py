"""Known-bad rules against locks, and drift of an environment from its lock."""

from __future__ import annotations

import shutil

import pytest

from runner import stacks
from runner.errors import StackError
from runner.stacks import compat, drift, environment, known_bad

RULES = known_bad.load()


def findings_for(lock_text: str) -> dict[str, known_bad.Finding]:
    return {f.rule.id: f for f in known_bad.evaluate(stacks.pins(lock_text), RULES)}


def test_every_rule_cites_an_https_source():
    assert len(RULES) >= 5
    assert all(rule.source.startswith("https://") and rule.fix and rule.problem for rule in RULES)


def test_torch_2_9_1_with_torchao_0_14_1_is_flagged_citing_the_source():
    found = findings_for("torch==2.9.1+cu128 \\\n    --hash=sha256:00\ntorchao==0.14.1 \\\n    --hash=sha256:11\n")
    finding = found["torchao-0.14-needs-torch-2.9.0"]
    assert finding.rule.severity == "error"
    assert finding.versions == {"torchao": "0.14.1", "torch": "2.9.1+cu128"}
    assert "https://github.com/pytorch/ao/issues/2919" in finding.describe()
    assert found["torch-2.9.1-allocator-variable"].rule.severity == "warning"


def test_the_matching_torch_is_not_flagged():
    assert "torchao-0.14-needs-torch-2.9.0" not in findings_for("torch==2.9.0\ntorchao==0.14.1\n")
    assert not findings_for("torch==2.9.0\n")


def test_absent_condition():
    assert "trl-0.11-imports-rich" in findings_for("trl==0.11.4\ntorch==2.5.1\n")
    assert "trl-0.11-imports-rich" not in findings_for("trl==0.11.4\nrich==13.9.4\n")


@pytest.mark.parametrize("name", ["cpu", "cu121-torch251-pypi", "mlx"])
def test_committed_locks_have_no_known_bad_error(name):
    errors = [f for f in findings_for(stacks.get(name).lock_file.read_text()).values() if f.rule.severity == "error"]
    assert not errors, [f.describe() for f in errors]


def test_compat_reports_a_bad_lock_as_failed_with_the_source(tmp_path):
    root = tmp_path / "lockfiles"
    shutil.copytree(stacks.LOCKFILES, root)
    (root / "cpu.txt").write_text((root / "cpu.txt").read_text().replace("torch==2.13.0+cpu", "torch==2.9.1+cu128") + "torchao==0.14.1 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    checks = {c.name: c for c in compat._known_bad(stacks.get("cpu", root=root))}
    bad = checks["known-bad: torchao-0.14-needs-torch-2.9.0"]
    assert bad.status == "fail" and "pytorch/ao/issues/2919" in bad.detail
    assert checks["known-bad: trl-0.11-imports-rich"].status == "pass"
    status = compat.write_report(stacks.get("cpu", root=root), list(checks.values()), tmp_path / "report")
    assert status == "fail"
    assert "| known-bad: torchao-0.14-needs-torch-2.9.0 | fail |" in (tmp_path / "report" / "cpu.md").read_text()


def test_a_rule_file_with_a_bad_specifier_is_refused(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text('[[rule]]\nid = "x"\nwhen = { torch = "2.9" }\nseverity = "fatal"\nproblem = "p"\nfix = "f"\nsource = "http://a"\n')
    with pytest.raises(StackError) as info:
        known_bad.load(path)
    assert "severity must be one of error, warning" in str(info.value)
    assert "https link" in str(info.value) and "neither a version specifier" in str(info.value)


def test_drift_follows_markers_and_reports_missing_and_changed():
    lock = (
        "torch==2.13.0+cpu \\\n    --hash=sha256:00\n"
        "mlx-metal==0.32.4 ; sys_platform == 'darwin' \\\n    --hash=sha256:00\n"
        "numpy==2.4.6 \\\n    --hash=sha256:00\n"
        "rich==15.0.0 \\\n    --hash=sha256:00\n"
    )
    locked = drift.locked_for_here(lock)
    assert "mlx-metal" not in locked  # not for this platform (the tests run on Linux)
    result = drift.compare(locked, {"torch": "2.13.0+cpu", "numpy": "2.5.0", "pip": "25.0"})
    assert result == {"clean": False, "missing": ["rich"], "changed": {"numpy": {"locked": "2.4.6", "installed": "2.5.0"}}, "extra": []}
    assert drift.describe(result) == "numpy 2.5.0 (locked 2.4.6); rich missing"


def test_strict_env_refuses_an_environment_without_a_stack_or_with_drift():
    with pytest.raises(StackError, match="not installed from a stack"):
        environment.require_exact({"stack": None, "lock_sha256": None, "drift": None})
    dirty = {"clean": False, "missing": ["rich"], "changed": {}}
    with pytest.raises(StackError, match=r"differs from the lock of stack cpu: rich missing.*runner.stacks.install cpu"):
        environment.require_exact({"stack": "cpu", "lock_sha256": "x", "drift": dirty})
