"""Stacks and their locks: declarations, hashes on every line, stale-lock detection."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from runner import install, locking, stacks
from runner.errors import StackError
from tests.conftest import REPO_ROOT

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


def test_every_declared_stack_loads_with_its_inputs():
    declared = stacks.load()
    assert set(declared) == DECLARED
    for stack in declared.values():
        assert stack.input_file.is_file() and stack.accelerator in stacks.ACCELERATORS
    assert declared["mlx"].platforms == ("universal",)
    assert declared["cpu"].index_urls[1] == "https://download.pytorch.org/whl/cpu"


@pytest.mark.parametrize("name", sorted(DECLARED - NEEDS_PYTORCH_INDEX))
def test_committed_locks_are_current_and_every_line_has_a_hash(name):
    stack = stacks.get(name)
    assert stack.lock_problem() is None
    text = stack.lock_file.read_text()
    assert f"nox -s lock -- {name}" in text and stack.input_sha256() in text
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
    head = locking.header(stack)
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
