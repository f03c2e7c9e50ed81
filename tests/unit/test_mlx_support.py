"""What the mlx engine shares with the rest: the step plan and learning rates (equal to transformers'),
the built-in model's numpy-drawn weights, the hand-off to another stack's environment, and preflight's mlx checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from runner import cache, env_checks, stack_venv, stacks
from runner import config as cfg
from runner.demo import tiny_model
from runner.engines import mlx_config
from runner.engines.schedule import eval_interval, learning_rate, total_steps, warmup_steps
from tests.conftest import DEMO_CONFIG, REPO_ROOT

MLX_CONFIG = REPO_ROOT / "configs" / "demo-mlx.yaml"
SCHEDULERS = typing.get_args(cfg.Scheduler)


# --- runner/engines/schedule.py ---------------------------------------------------------------


def test_every_scheduler_is_covered():
    assert set(SCHEDULERS) == {"linear", "cosine", "constant", "constant_with_warmup"}


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize(("steps", "warmup_ratio"), [(37, 0.1), (144, 0.05), (5, 0.0), (1, 0.5)])
def test_learning_rate_equals_transformers_scheduler(name, steps, warmup_ratio):
    config = cfg.load(DEMO_CONFIG, [f"train.scheduler={name}", f"train.warmup_ratio={warmup_ratio}", "train.learning_rate=3e-3"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.train.learning_rate)
    warmup = warmup_steps(config, steps)
    scheduler = transformers.get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    for done in range(steps + 1):  # the lr after `done` scheduler steps is the one of update number done + 1
        expected = scheduler.get_last_lr()[0]
        assert learning_rate(config, steps, done) == pytest.approx(expected, rel=1e-12, abs=1e-18), (name, steps, done)
        optimizer.step()
        scheduler.step()


def test_learning_rate_shape():
    """Warmup from zero to the peak, then decay to zero at the end (constant: the peak throughout)."""
    steps = 40
    config = cfg.load(DEMO_CONFIG, ["train.scheduler=linear", "train.warmup_ratio=0.1", "train.learning_rate=1e-3"])
    assert warmup_steps(config, steps) == 4
    assert learning_rate(config, steps, 0) == 0.0
    assert learning_rate(config, steps, 2) == pytest.approx(5e-4)
    assert learning_rate(config, steps, 4) == pytest.approx(1e-3)
    assert learning_rate(config, steps, steps) == 0.0
    constant = cfg.load(DEMO_CONFIG, ["train.scheduler=constant", "train.warmup_ratio=0.1", "train.learning_rate=1e-3"])
    assert {learning_rate(constant, steps, done) for done in range(steps + 1)} == {1e-3}


@pytest.mark.parametrize(
    ("overrides", "rows", "expected"),
    [
        ((), 768, 144),  # the demo: 48 batches of 16 a epoch, 3 epochs
        (("train.max_steps=7",), 768, 7),  # max_steps overrides epochs
        (("train.per_device_batch_size=8", "train.gradient_accumulation=4", "train.epochs=2"), 100, 6),  # 13 batches -> 3 updates an epoch
        (("train.per_device_batch_size=8", "train.gradient_accumulation=4", "train.epochs=1.5"), 100, 5),  # ceil(1.5 * 3)
        (("train.gradient_accumulation=4", "train.epochs=1"), 1, 1),  # fewer batches than accumulation: still one step
    ],
)
def test_total_steps(overrides, rows, expected):
    assert total_steps(cfg.load(DEMO_CONFIG, list(overrides)), rows) == expected


def test_eval_interval():
    config = cfg.load(DEMO_CONFIG)  # eval_every_percent: 10
    assert eval_interval(config, 144) == 14
    assert eval_interval(config, 5) == 1  # never zero
    assert eval_interval(cfg.load(DEMO_CONFIG, ["train.eval_every_percent=100"]), 37) == 37


# --- runner/demo/tiny_model.py ----------------------------------------------------------------


def llama_config(name: str) -> transformers.LlamaConfig:
    """The config tiny_model.build makes (special tokens 0, 1, 2: pad, bos, eos as its tokenizer numbers them)."""
    settings = json.loads(tiny_model.model_config(name).read_text())
    config = transformers.LlamaConfig(**{k: v for k, v in settings.items() if k not in ("architectures", "model_type")},
                                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config.architectures = settings["architectures"]
    return config


@pytest.mark.parametrize("name", ["tiny-llama", "small-llama"])
def test_random_weights_match_transformers_llama(name):
    config = llama_config(name)
    weights = tiny_model.random_weights(config.to_dict())
    with torch.device("meta"):  # names and shapes only: no need to initialise
        reference = transformers.LlamaForCausalLM(config).state_dict()
    assert sorted(weights) == sorted(reference)
    for key, tensor in reference.items():
        assert tuple(weights[key].shape) == tuple(tensor.shape), key
        assert weights[key].dtype == np.float32, key
    std = config.initializer_range
    for key, value in weights.items():
        if key.endswith("norm.weight"):
            assert np.all(value == 1.0), key
        else:
            drawn = value[1:] if key == "model.embed_tokens.weight" else value
            assert abs(float(drawn.std()) - std) < 0.05 * std, key
            assert abs(float(drawn.mean())) < 0.05 * std, key
    assert np.all(weights["model.embed_tokens.weight"][0] == 0.0)  # the pad token's row
    assert np.any(weights["model.embed_tokens.weight"][1] != 0.0)


def test_random_weights_are_deterministic():
    settings = llama_config("tiny-llama").to_dict()
    first, second = tiny_model.random_weights(settings), tiny_model.random_weights(settings)
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[key], second[key]) for key in first)
    other = tiny_model.random_weights(settings, seed=1)
    assert not np.array_equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])
    # Every tensor is drawn separately: no two weights of one shape are equal.
    assert not np.array_equal(first["model.layers.0.mlp.gate_proj.weight"], first["model.layers.0.mlp.up_proj.weight"])


def test_built_model_loads_and_holds_random_weights():
    directory = tiny_model.ensure_built()
    assert directory.parent == tiny_model.cache_dir() and directory.name.startswith("tiny-llama-")
    assert tiny_model.ensure_built() == directory  # cached: the same directory again
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM"
    expected = tiny_model.random_weights(json.loads((directory / "config.json").read_text()))
    loaded = model.state_dict()
    assert sorted(loaded) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], torch.from_numpy(value)), key


# --- runner/stack_venv.py ---------------------------------------------------------------------


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


# --- runner/engines/mlx_config.py and preflight's checks --------------------------------------


def test_demo_mlx_config_is_supported():
    assert mlx_config.unsupported(cfg.load(MLX_CONFIG)) == []


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("resources.processes_per_node=2", "processes_per_node=2"),
        ("resources.nodes=2", "resources.nodes=2"),
        ("resources.gpus_per_node=1", "resources.gpus_per_node=1"),
        ("distributed.strategy=fsdp", "distributed.strategy=fsdp"),
        ("distributed.backend=gloo", "distributed.backend=gloo"),
        ("distributed.tensor_parallel=2", "distributed.tensor_parallel=2"),
        ("distributed.port=29500", "distributed.port=29500"),
        ("distributed.env={NCCL_DEBUG: WARN}", "distributed.env="),
        ("train.deterministic=true", "train.deterministic"),
    ],
)
def test_each_unsupported_setting_is_named_once(override, named):
    (message,) = mlx_config.unsupported(cfg.load(MLX_CONFIG, [override]))
    assert named in message


def test_unsupported_settings_are_all_reported():
    overrides = ["resources.processes_per_node=2", "resources.gpus_per_node=1", "distributed.strategy=fsdp", "train.deterministic=true"]
    assert len(mlx_config.unsupported(cfg.load(MLX_CONFIG, overrides))) == 4


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


# --- runner/cache.py --------------------------------------------------------------------------


def test_cache_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.root() == tmp_path / "explicit"
    monkeypatch.setenv("LOCKSTEP_CACHE", "")  # empty counts as unset
    assert cache.root() == tmp_path / "xdg" / "lockstep"
    monkeypatch.delenv("LOCKSTEP_CACHE")
    assert cache.root() == tmp_path / "xdg" / "lockstep"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.root() == tmp_path / "home" / ".cache" / "lockstep"


def test_built_models_live_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path))
    assert tiny_model.cache_dir() == tmp_path / "models"
    assert isinstance(tiny_model.cache_dir(), Path)
