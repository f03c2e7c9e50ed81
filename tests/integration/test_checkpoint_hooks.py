"""The entry point in-process, where a back end plugs in: the storage hook, and a save that fails."""

from __future__ import annotations

import errno

import pytest

from runner import checkpoint, config, entrypoint, metrics
from runner.errors import CheckpointError
from tests.conftest import DEMO_CONFIG

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

    summary = entrypoint.main(short_run(tmp_path / "run"), after_checkpoint=commit_volume)
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
        entrypoint.main(short_run(run_dir))
    message = str(info.value)
    assert "could not write the checkpoint of step 9" in message and "Input/output error" in message
    assert f"the newest intact checkpoint is {run_dir / 'checkpoints' / 'step-00000006'}" in message
    store = checkpoint.CheckpointStore(run_dir)
    assert [c.step for c in store.candidates()] == [6, 3]
    assert all(checkpoint.verify(c.path) is None for c in store.candidates())
    assert not any(p.name.startswith(checkpoint.STAGING_PREFIX) for p in store.root.iterdir())
    assert max(row["step"] for row in metrics.read(run_dir)) == 9  # the metrics written so far are kept
