"""Stacks and their locks: declarations, hashes on every line, stale and hand-edited locks, drift."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner import config as config_module
from runner import stacks
from runner.errors import StackError
from runner.preflight import env_checks
from runner.stacks import drift, install, locking
from tests.helpers import REPO_ROOT

DECLARED = {"cpu", "cu121-torch251", "cu121-torch251-pypi", "hpc-cu118", "mlx"}
# PyTorch's CUDA indexes cannot be reached from the machines this project is built on.
NEEDS_PYTORCH_INDEX = {"cu121-torch251", "hpc-cu118"}


def locked_requirements(lock_text: str) -> dict[str, list[str]]:
    """Each `name==version` line of a lock with the hashes that follow it."""
    entries: dict[str, list[str]] = {}
    current = None
    for line in lock_text.splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            current = line.split(" ;")[0].split(" \\")[0].strip()
            entries[current] = []
        elif current and line.strip().startswith("--hash=sha256:"):
            entries[current].append(line.strip().split(":")[1].rstrip(" \\"))
    return entries


def delete_entry(lock: Path, name: str) -> None:
    """Remove `name==...` from a lock with its hashes and `# via` lines, as a hand edit would."""
    lines = lock.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}=="))
    end = next((i for i in range(start + 1, len(lines)) if lines[i][:1].isalnum()), len(lines))
    lock.write_text("".join(lines[:start] + lines[end:]))


def body_of(lock_text: str) -> str:
    """What follows a lock's header (its leading comment lines)."""
    return lock_text[len(re.match(r"(?:#.*\n)*", lock_text).group(0)):]


def test_every_declared_stack_loads_with_its_inputs():
    declared = stacks.load()
    assert set(declared) == DECLARED
    for stack in declared.values():
        assert stack.input_file.is_file() and stack.accelerator in stacks.ACCELERATORS
    assert declared["mlx"].platforms == ("universal",)
    assert declared["cpu"].project_index.url == "https://download.pytorch.org/whl/cpu"
    assert declared["cu121-torch251"].project_index.projects[:2] == ("torch", "torchvision")


@pytest.mark.parametrize("name", sorted(DECLARED - NEEDS_PYTORCH_INDEX))
def test_committed_locks_are_current_and_every_line_has_a_hash(name):
    stack = stacks.get(name)
    assert stack.lock_problem() is None
    text = stack.lock_file.read_text()
    assert f"nox -s lock -- {name}" in text and stack.input_sha256() in text
    assert text == locking.header(stack, body_of(text)) + body_of(text)  # byte for byte what `nox -s lock` writes
    entries = locked_requirements(text)
    assert len(entries) > 20
    for requirement, hashes in entries.items():
        assert "==" in requirement, requirement
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), requirement


def test_the_cpu_lock_holds_the_cpu_build_of_torch():
    entries = locked_requirements(stacks.get("cpu").lock_file.read_text())
    assert "torch==2.13.0+cpu" in entries
    assert not [r for r in entries if r.startswith("nvidia-")]


@pytest.mark.parametrize("name", sorted(NEEDS_PYTORCH_INDEX))
def test_a_stack_without_a_lock_names_the_command_that_makes_it(name):
    assert stacks.get(name).lock_problem() == (
        f"stack {name} has no lock ({name}.txt); run `nox -s lock -- {name}`"
    )


@pytest.fixture
def lockfiles_copy(tmp_path):
    root = tmp_path / "lockfiles"
    shutil.copytree(stacks.LOCKFILES, root)
    return root


def test_editing_an_input_makes_its_lock_stale_and_install_refuses(lockfiles_copy, tmp_path):
    with (lockfiles_copy / "cpu.in").open("a") as handle:
        handle.write("requests\n")
    stack = stacks.get("cpu", root=lockfiles_copy)
    assert "stale" in stack.lock_problem() and "nox -s lock -- cpu" in stack.lock_problem()
    assert stacks.get("mlx", root=lockfiles_copy).lock_problem() is None
    with pytest.raises(StackError, match=r"nox -s lock -- cpu"):
        install.install(stack, tmp_path / "venv")
    assert not (tmp_path / "venv").exists()


def test_a_lock_edited_by_hand_names_the_file_and_both_fixes(lockfiles_copy):
    delete_entry(lockfiles_copy / "cpu.txt", "idna")
    problem = stacks.get("cpu", root=lockfiles_copy).lock_problem()
    assert problem is not None and "lockfiles/cpu.txt was edited after it was made" in problem
    assert "nothing is installed from it" in problem
    assert "`nox -s lock -- cpu`" in problem and "`git checkout lockfiles/cpu.txt`" in problem
    assert stacks.get("mlx", root=lockfiles_copy).lock_problem() is None


def test_a_lock_without_its_body_digest_line_is_refused(lockfiles_copy):
    lock = lockfiles_copy / "mlx.txt"
    lines = lock.read_text().splitlines(keepends=True)
    lock.write_text("".join(line for line in lines if not line.startswith("# body sha256:")))
    problem = stacks.get("mlx", root=lockfiles_copy).lock_problem()
    assert problem is not None and "lockfiles/mlx.txt has no `# body sha256:` line" in problem
    assert "`nox -s lock -- mlx`" in problem


def test_install_refuses_a_lock_edited_by_hand_before_making_the_environment(lockfiles_copy, tmp_path):
    delete_entry(lockfiles_copy / "cpu.txt", "idna")
    venv = tmp_path / "venv"
    command = [sys.executable, "-m", "runner.stacks.install", "--lockfiles", str(lockfiles_copy), "cpu", str(venv)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == StackError.exit_code == 8, result.stderr
    assert "lockfiles/cpu.txt was edited after it was made" in result.stderr and "nox -s lock -- cpu" in result.stderr
    assert not venv.exists()


@pytest.mark.parametrize("backend", ["docker", "slurm"])
def test_preflight_counts_a_lock_edited_by_hand_as_an_error(lockfiles_copy, monkeypatch, backend):
    delete_entry(lockfiles_copy / "cpu.txt", "idna")
    monkeypatch.setattr(stacks, "get", functools.partial(stacks.get, root=lockfiles_copy))
    config = config_module.load(REPO_ROOT / "configs" / "demo.yaml", ["stack=cpu"])
    checks = env_checks.dependencies(config, backend, strict_env=False)
    assert [(check.name, check.status) for check in checks] == [("lock", "error")]
    assert "lockfiles/cpu.txt was edited after it was made" in checks[0].summary
    assert "nox -s lock -- cpu" in checks[0].fix


def test_the_lock_writer_records_its_body_and_any_one_byte_edit_is_caught(lockfiles_copy):
    stack = stacks.get("mlx", root=lockfiles_copy)
    body = body_of(stack.lock_file.read_text())
    body = body[:body.index("\n", body.index("# via")) + 1]  # the first entry: a few hundred bytes, every one tried
    stack.lock_file.write_text(locking.header(stack, body) + body)
    assert stack.lock_problem() is None
    head, data = locking.header(stack, body).encode(), body.encode()
    edits = [data[:i] + bytes([data[i] ^ 1]) + data[i + 1:] for i in range(len(data))] + [data[:-1], data + b"\n"]
    for edited in edits:
        stack.lock_file.write_bytes(head + edited)
        assert "was edited after it was made" in (stack.lock_problem() or ""), edited


def test_drift_counts_packages_missing_changed_and_extra():
    locked = {"torch": "2.13.0+cpu", "numpy": "2.4.6", "rich": "15.0.0"}
    present = {"torch": "2.13.0+cpu", "numpy": "2.5.0", "requests": "2.34.2", "pip": "26.3", "lockstep": "0.1.0"}
    result = drift.compare(locked, present)
    changed = {"numpy": {"locked": "2.4.6", "installed": "2.5.0"}}
    assert result == {"clean": False, "missing": ["rich"], "changed": changed, "extra": ["requests==2.34.2"]}
    assert drift.describe(result) == "numpy 2.5.0 (locked 2.4.6); rich missing; requests 2.34.2 (not in the lock)"
    only_extra = drift.compare({"torch": "2.13.0+cpu"}, {"torch": "2.13.0+cpu", "idna": "3.20"})
    assert not only_extra["clean"] and only_extra["extra"] == ["idna==3.20"]


def test_drift_exempts_what_a_venv_brings_unless_the_lock_pins_it():
    brought = {"pip": "25.0", "setuptools": "80.9.0", "wheel": "0.45.1", "lockstep": "0.1.0"}
    clean = {"clean": True, "missing": [], "changed": {}, "extra": []}
    assert drift.compare({"torch": "2.5.1"}, {"torch": "2.5.1", **brought}) == clean
    pinned = drift.compare({"torch": "2.5.1", "setuptools": "84.2.1"}, {"torch": "2.5.1", **brought})
    assert not pinned["clean"] and pinned["changed"] == {"setuptools": {"locked": "84.2.1", "installed": "80.9.0"}}
    assert pinned["extra"] == []


def test_drift_of_a_manifest_recorded_before_extras_were_counted_still_reads():
    assert drift.describe({"clean": False, "missing": ["peft"], "changed": {}}) == "peft missing"


def test_bad_declarations_are_reported_together(lockfiles_copy):
    text = (lockfiles_copy / "stacks.toml").read_text()
    text = text.replace('accelerator = "metal"', 'accelerator = "tpu"').replace('engine = "hf"\n', 'engine = "hf"\ncolour = "red"\n', 1)
    (lockfiles_copy / "stacks.toml").write_text(text)
    with pytest.raises(StackError) as info:
        stacks.load(lockfiles_copy)
    assert "stack mlx: accelerator must be one of cpu, cuda, metal, not 'tpu'" in str(info.value)
    assert "stack cpu: missing nothing; unknown colour" in str(info.value)
    with pytest.raises(StackError, match="unknown stack 'gpu'; stacks in .*: cpu, "):
        stacks.get("gpu")


def test_make_train_stops_on_a_stale_lock_naming_the_lock_command(tmp_path):
    """A copy of the repository whose cpu.in was edited after its lock was made."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    with (tmp_path / "lockfiles" / "cpu.in").open("a") as handle:
        handle.write("requests\n")
    result = subprocess.run(["make", "train"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "the lock of stack cpu is stale" in result.stderr and "nox -s lock -- cpu" in result.stderr
    assert not (tmp_path / ".venv").exists()


def test_lock_header_carries_no_machine_path_and_no_date_but_the_resolution_cutoff():
    stack = stacks.get("cpu")
    head = locking.header(stack, body_of(stack.lock_file.read_text()))
    assert str(REPO_ROOT) not in head
    assert re.findall(r"\d{4}-\d\d-\d\dT[\d:]+Z", head) == [stack.resolved_before]


def test_the_compat_workflow_covers_every_stack_with_the_nox_session():
    import yaml

    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "compat.yml").read_text())
    jobs = workflow["jobs"]
    covered = {entry["stack"] for entry in jobs["compat"]["strategy"]["matrix"]["include"]}
    covered |= set(jobs["compat-gpu"]["strategy"]["matrix"]["stack"])
    assert covered == DECLARED
    for job in jobs.values():
        assert any(step.get("run", "").startswith("nox -s compat -- ${{ matrix.stack }}") for step in job["steps"])
