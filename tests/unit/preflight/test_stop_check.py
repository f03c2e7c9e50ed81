"""The stop-time check: a stop signal's checkpoint, timed at the storage's measured speed, against the backend's grace period."""

from __future__ import annotations

import os

from runner import config
from runner.preflight import stop_check
from runner.preflight.env_checks import checkpoint_bytes
from runner.preflight.memory import ModelShape
from tests.helpers import DEMO_CONFIG

DEMO_SHAPE = ModelShape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=512, tied_embeddings=True)
LLAMA_70B = ModelShape(hidden=8192, intermediate=28672, layers=80, heads=64, kv_heads=8, vocab=128256, tied_embeddings=False)


def load(tmp_path, *sets: str) -> config.RunConfig:
    return config.load(DEMO_CONFIG, (f"output_dir={tmp_path / 'run'}", *sets))


def test_a_small_adapter_fits_modal_s_grace_period(tmp_path):
    found = stop_check.check(load(tmp_path), "modal", DEMO_SHAPE, tmp_path / "run")
    assert found.status == "ok" and "gives 30 s" in found.summary and "assumed 100 MB/s" in found.summary


def test_a_large_adapter_that_cannot_be_written_in_docker_s_ten_seconds_is_a_warning_with_the_fix(tmp_path):
    run_config = load(tmp_path, "lora.r=512")
    assert checkpoint_bytes(LLAMA_70B, run_config) > 50e9  # tens of GB: far beyond any disk's 10 seconds
    found = stop_check.check(run_config, "docker", LLAMA_70B, tmp_path / "run")
    assert found.status == "warning" and "may be killed before its checkpoint is durable" in found.summary
    assert "measured writing and syncing 16 MiB" in found.summary and "gives 10 s" in found.summary
    assert "faster storage" in found.fix and "every_minutes" in found.fix
    assert os.listdir(tmp_path) == []  # the probe file is gone, and nothing else was made


def test_slurm_without_a_reachable_cluster_uses_slurm_s_default_kill_wait(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol
    seconds, source = stop_check.grace_period(load(tmp_path), "slurm")
    assert seconds == 30 and "Slurm's default KillWait (scontrol not found here)" in source


def test_a_local_run_has_no_kill_to_race(tmp_path):
    found = stop_check.check(load(tmp_path), "local", DEMO_SHAPE, tmp_path / "run")
    assert found.status == "ok" and "no kill follows a stop signal" in found.summary


def test_the_write_speed_is_measured_where_the_checkpoints_go(tmp_path):
    speed = stop_check.write_speed(tmp_path / "not" / "yet" / "made")
    assert speed is not None and speed > 1e6  # bytes/s, measured in the nearest existing parent
    assert os.listdir(tmp_path) == []
