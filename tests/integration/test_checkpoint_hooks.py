"""The entry point in-process, where a back end plugs in: the storage hook, and a save that fails."""

from __future__ import annotations

import errno

import pytest

from runner import config
from runner.errors import CheckpointError
from runner.job import run as job_run
from runner.training import checkpoint, metrics
from tests.helpers import DEMO_CONFIG

pytestmark = pytest.mark.slow


def short_run(run_dir, *extra: str) -> config.RunConfig:
    overrides = (f"output_dir={run_dir}", "train.max_steps=12", "checkpoint.every_percent=25", *extra)
    return config.load(DEMO_CONFIG, overrides)


def test_storage_hook_runs_after_every_completed_checkpoint(tmp_path):
    seen = []

    def commit_volume(path):
        # Called only once the checkpoint is complete and in its final place.
        assert checkpoint.verify(path) is None and path.parent.name == "checkpoints"
        seen.append(path.name)

    summary = job_run.main(short_run(tmp_path / "run"), after_checkpoint=commit_volume)
    assert summary["steps"] == 12
    assert seen == ["step-00000003", "step-00000006", "step-00000009", "step-00000012"]


def test_injected_write_failure_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    real_write = checkpoint._write_synced
    markers = []

    def fail_on_third_marker(path, text):
        markers.append(path)
        if len(markers) == 3:
            raise OSError(errno.EIO, "Input/output error", str(path))
        real_write(path, text)

    monkeypatch.setattr(checkpoint, "_write_synced", fail_on_third_marker)
    with pytest.raises(CheckpointError) as info:
        job_run.main(short_run(run_dir))
    message = str(info.value)
    assert "could not write the checkpoint of step 9" in message and "Input/output error" in message
    assert f"the newest intact checkpoint is {run_dir / 'checkpoints' / 'step-00000006'}" in message
    store = checkpoint.CheckpointStore(run_dir)
    assert [c.step for c in store.candidates()] == [6, 3]
    assert all(checkpoint.verify(c.path) is None for c in store.candidates())
    assert not any(p.name.startswith(checkpoint.STAGING_PREFIX) for p in store.root.iterdir())
    # The write failed behind the loop: the run stopped at a step boundary after it, at the latest when the next save
    # waited for it; the metrics written so far are kept.
    assert 9 <= max(row["step"] for row in metrics.read(run_dir)) <= 12


def test_a_full_disk_while_the_final_adapter_is_written_is_exit_6_and_the_rerun_only_writes_it(tmpfs):
    run_dir = tmpfs("20m") / "run"
    filler = run_dir.parent / "filler"

    def fill_the_disk_after_the_last_checkpoint(path):
        if path.name == "step-00000012":
            with filler.open("wb") as handle:
                try:
                    while True:
                        handle.write(b"\0" * 2**16)
                        handle.flush()
                except OSError:
                    pass  # full

    with pytest.raises(CheckpointError) as info:
        job_run.main(short_run(run_dir), after_checkpoint=fill_the_disk_after_the_last_checkpoint)
    message = str(info.value)
    assert info.value.exit_code == 6 and f"could not write the run's adapter/ in {run_dir}" in message, message
    assert "No space left on device" in message and f"the newest intact checkpoint is {run_dir / 'checkpoints' / 'step-00000012'}" in message
    assert "no training is repeated" in message
    assert not (run_dir / "adapter").exists() and not (run_dir / "summary.json").exists() and not list(run_dir.glob(".staging-*"))

    filler.unlink()
    summary = job_run.main(short_run(run_dir))
    assert summary["steps"] == 12 and summary["attempts"] == 2 and summary["last_attempt"]["train_tokens"] == 0
    final = run_dir / "checkpoints" / "step-00000012"
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (run_dir / "adapter" / name).read_bytes() == (final / name).read_bytes()
