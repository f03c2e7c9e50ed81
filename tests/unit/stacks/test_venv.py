"""The hand-off to another stack's environment: which stack a config's job runs in (the mlx engine's own),
what that environment imports, and where it lives."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

from runner import config as cfg
from runner import stacks
from runner.stacks import venv as stack_venv
from tests.helpers import DEMO_CONFIG, MLX_CONFIG, REPO_ROOT


def test_target_is_none_for_this_environments_engines(monkeypatch):
    monkeypatch.setenv("LOCKSTEP_STACK", "cpu")
    for engine in ("auto", "hf"):
        config = cfg.load(DEMO_CONFIG, [f"engine={engine}"])
        assert config.stack is None
        assert stack_venv.target(config) is None


def test_target_of_mlx_engine_is_the_mlx_stack(monkeypatch):
    monkeypatch.setenv("LOCKSTEP_STACK", "cpu")
    config = cfg.load(MLX_CONFIG, ["stack=null"])
    assert config.engine == "mlx" and config.stack is None
    assert stack_venv.target(config) == "mlx"
    assert stack_venv.target(cfg.load(MLX_CONFIG)) == "mlx"
    monkeypatch.setenv("LOCKSTEP_STACK", "mlx")  # already in the mlx stack's environment
    assert stack_venv.target(config) is None


def test_target_is_the_configs_stack_unless_it_is_this_one(monkeypatch):
    monkeypatch.setenv("LOCKSTEP_STACK", "cpu")
    assert stack_venv.target(cfg.load(DEMO_CONFIG, ["stack=cu121-torch251-pypi"])) == "cu121-torch251-pypi"
    assert stack_venv.target(cfg.load(DEMO_CONFIG, ["stack=cpu"])) is None
    monkeypatch.setenv("LOCKSTEP_STACK", "cu121-torch251-pypi")
    assert stack_venv.target(cfg.load(DEMO_CONFIG, ["stack=cpu"])) == "cpu"
    assert stack_venv.target(cfg.load(DEMO_CONFIG, ["stack=cu121-torch251-pypi"])) is None


def test_the_job_in_another_stacks_environment_imports_this_copy_of_lockstep(monkeypatch):
    """The cached environment is shared by every checkout; its own editable lockstep may point at another one."""
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    assert stack_venv.job_environment()["PYTHONPATH"].split(":") == [str(REPO_ROOT), "/elsewhere"]
    monkeypatch.delenv("PYTHONPATH")
    assert stack_venv.job_environment()["PYTHONPATH"] == str(REPO_ROOT)


def test_location_follows_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path / "cache"))
    lockfiles = tmp_path / "lockfiles"
    lockfiles.mkdir()
    stack = dataclasses.replace(stacks.get("mlx"), root=lockfiles)
    shutil.copy(stacks.LOCKFILES / "mlx.txt", stack.lock_file)
    first = stack_venv.location(stack)
    digest = hashlib.sha256(stack.lock_file.read_bytes()).hexdigest()
    assert first == tmp_path / "cache" / "venvs" / f"mlx-{digest[:12]}"
    assert stack_venv.location(stack) == first
    with stack.lock_file.open("a") as lock:
        lock.write("# one more line\n")
    second = stack_venv.location(stack)
    assert second != first and second.parent == first.parent and second.name.startswith("mlx-")
