"""Preflight's environment checks: the mlx engine (local only, one process, handed to the mlx stack), and the
allocator variable per torch release."""

from __future__ import annotations

import pytest

from runner import config as cfg
from runner.preflight import env_checks, hardware
from tests.helpers import MLX_CONFIG


def test_mlx_engine_is_local_only():
    checks = env_checks.dependencies(cfg.load(MLX_CONFIG), "docker", strict_env=False)
    (engine,) = [check for check in checks if check.name == "engine"]
    assert engine.status == "error"
    assert "local only" in engine.summary and "docker" in engine.summary


def test_mlx_engine_refuses_several_processes(monkeypatch):
    monkeypatch.setenv("LOCKSTEP_STACK", "cpu")
    checks = env_checks.dependencies(cfg.load(MLX_CONFIG, ["resources.processes_per_node=2"]), "local", strict_env=False)
    (engine,) = [check for check in checks if check.name == "engine"]
    assert engine.status == "error"
    assert "processes_per_node=2" in engine.summary


def test_local_mlx_run_is_handed_to_the_mlx_stack(monkeypatch):
    monkeypatch.setenv("LOCKSTEP_STACK", "cpu")  # this environment: the cpu stack
    checks = env_checks.dependencies(cfg.load(MLX_CONFIG), "local", strict_env=False)
    (lock,) = [check for check in checks if check.name == "lock"]
    assert lock.status == "ok" and "stack mlx" in lock.summary and "local run" in lock.summary
    assert [check for check in checks if check.status == "error"] == []
    (engine,) = [check for check in checks if check.name == "engine"]
    assert engine.status == "ok" and "mlx" in engine.summary


@pytest.mark.parametrize("torch_version, env, status, name", [
    ("2.5.1+cu121", {}, "ok", "the job sets PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"),
    ("2.13.0", {}, "ok", "the job sets PYTORCH_ALLOC_CONF=expandable_segments:True"),
    ("2.5.1", {"PYTORCH_ALLOC_CONF": "expandable_segments:True"}, "warning", "set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"),
    ("2.9.1", {"PYTORCH_ALLOC_CONF": "expandable_segments:True"}, "warning", "ignores its expandable_segments on CUDA"),
    ("2.9.1", {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}, "ok", "PYTORCH_CUDA_ALLOC_CONF"),
    ("2.11.0", {"PYTORCH_ALLOC_CONF": "expandable_segments:True"}, "ok", "PYTORCH_ALLOC_CONF"),
    ("2.11.0", {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}, "ok", "deprecated alias"),
    ("2.11.0", {"PYTORCH_ALLOC_CONF": "max_split_size_mb:128"}, "warning", "without expandable segments"),
])
def test_allocator_variable_follows_the_torch_release(monkeypatch, torch_version, env, status, name):
    for variable in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"):
        monkeypatch.delenv(variable, raising=False)
    check = env_checks.allocator(hardware.profile("H100"), torch_version, env)  # as the config's distributed.env
    assert check.status == status and name in check.summary + check.fix


def test_allocator_does_not_apply_off_cuda():
    assert env_checks.allocator(hardware.profile("M2-16GB"), "2.5.1", {}).status == "ok"
