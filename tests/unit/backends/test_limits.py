"""Platform limits are checked before anything is submitted, each problem with its fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runner import config as config_module
from runner.backends import limits
from runner.config.placement import parse_duration, slurm_time
from tests.helpers import DEMO_CONFIG, REPO_ROOT


def demo(*overrides: str) -> config_module.RunConfig:
    return config_module.load(DEMO_CONFIG, overrides)


def messages(problems) -> list[str]:
    return [str(problem) for problem in problems if problem.status == "error"]


def test_ten_h100_in_one_modal_container_is_refused_with_the_fix():
    (message,) = messages(limits.modal(demo("resources.gpu_type=H100", "resources.gpus_per_node=10", "resources.processes_per_node=10")))
    assert "H100:10 exceeds Modal's 8 GPUs per container" in message
    assert "use H100:8" in message and "cluster of 2 nodes of 8 GPUs" in message


def test_a10_allows_four_per_container():
    assert messages(limits.modal(demo("resources.gpu_type=A10", "resources.gpus_per_node=4", "resources.processes_per_node=4"))) == []
    (message,) = messages(limits.modal(demo("resources.gpu_type=A10", "resources.gpus_per_node=5", "resources.processes_per_node=5")))
    assert "A10:5 exceeds Modal's 4 GPUs per container" in message


def test_a_25_hour_attempt_is_refused_and_24_hours_is_accepted():
    (message,) = messages(limits.modal(demo("resources.time_limit=25h")))
    assert "exceeds Modal's 24 h per attempt" in message and "at most 24h" in message
    assert messages(limits.modal(demo("resources.time_limit=24:00:00"))) == []


def test_modal_retries_gpu_names_and_clusters():
    assert "modal.retries 11 exceeds Modal's 10" in messages(limits.modal(demo("modal.retries=11")))[0]
    assert "no GPU type 'H1000'" in messages(limits.modal(demo("resources.gpu_type=H1000", "resources.gpus_per_node=1")))[0]
    half_nodes = messages(limits.modal(demo("resources.gpu_type=H100", "resources.nodes=2", "resources.gpus_per_node=5",
                                            "resources.processes_per_node=5")))
    assert any("must take every GPU of its node (H100:8)" in m for m in half_nodes)
    assert any("no CPU-only clusters" in m for m in messages(limits.modal(demo("resources.nodes=2"))))
    assert messages(limits.modal(demo("resources.gpu_type=H100", "resources.nodes=2", "resources.gpus_per_node=8",
                                      "resources.processes_per_node=8"))) == []


def test_world_size_and_process_layout():
    assert "tensor_parallel 3 does not divide the world size 4" in messages(limits.common(demo("resources.processes_per_node=4", "distributed.tensor_parallel=3"), "slurm"))[0]
    assert "data-parallel only" in messages(limits.common(demo("resources.processes_per_node=4", "distributed.tensor_parallel=2"), "slurm"))[0]
    assert "run one process per GPU" in messages(limits.common(demo("resources.gpus_per_node=2", "resources.processes_per_node=4"), "slurm"))[0]
    idle = limits.common(demo("resources.gpus_per_node=4"), "slurm")
    assert [p.status for p in idle] == ["warning"] and "3 GPU(s) would sit idle" in idle[0].summary
    assert "runs on this machine only" in messages(limits.common(demo("resources.nodes=2"), "local"))[0]


def test_slurm_partition_limits_from_scontrol_fields():
    partition = {"PartitionName": "gpu", "State": "UP", "MaxNodes": "4", "TotalNodes": "16", "MaxTime": "2-00:00:00"}
    assert messages(limits.slurm(demo("resources.nodes=4", "resources.time_limit=48h"), partition)) == []
    problems = messages(limits.slurm(demo("resources.nodes=5", "resources.time_limit=3d"), partition))
    assert "5 nodes asked; partition gpu allows at most 4" in problems[0]
    assert "exceeds partition gpu's MaxTime 2-00:00:00" in problems[1] and "at most 2-00:00:00" in problems[1]
    assert "is DOWN" in messages(limits.slurm(demo(), partition | {"State": "DOWN"}))[0]
    assert "not shorter than the time limit" in messages(limits.slurm(demo("resources.time_limit=4m"), None))[0]


@pytest.mark.parametrize("text, seconds", [("90m", 5400), ("6h", 21600), ("1d12h", 129600), ("06:00:00", 21600),
                                           ("1-12:00:00", 129600), ("30", 1800), ("10:30", 630), ("2-00", 172800)])
def test_durations_in_unit_and_slurm_forms(text, seconds):
    assert parse_duration(text) == seconds


def test_slurm_time_rounds_up_to_minutes():
    assert slurm_time(3601) == "0-01:01:00" and slurm_time(129600) == "1-12:00:00"


def test_a_limit_violation_fails_before_submitting_with_the_fix():
    """The acceptance case from the command line: exit 10, the fix in the message, nothing submitted."""
    result = subprocess.run([sys.executable, "-m", "runner", "train", str(DEMO_CONFIG), "--backend", "slurm", "--dry-run",
                             "--set", "resources.nodes=2", "--set", "distributed.tensor_parallel=3"],
                            cwd=REPO_ROOT, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 10, result.stderr
    assert "nothing was submitted" in result.stderr and "tensor_parallel 3 does not divide the world size 2" in result.stderr
