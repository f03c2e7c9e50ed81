"""What the mlx engine cannot do yet is named, each setting once and all of them together."""

from __future__ import annotations

import pytest

from runner import config as cfg
from runner.engines import mlx_config
from tests.helpers import MLX_CONFIG


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
