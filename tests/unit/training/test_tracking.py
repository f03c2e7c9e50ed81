"""TensorBoard event files as lockstep writes them, read back with TensorBoard's own loader; tracker config."""

from __future__ import annotations

import pytest

from runner import config as config_module
from runner.errors import ConfigError
from runner.preflight import env_checks
from runner.training import tensorboard_events
from tests.helpers import DEMO_CONFIG


def test_crc32c_matches_the_standard_check_value():
    assert tensorboard_events.crc32c(b"123456789") == 0xE3069283


def test_event_file_reads_back_with_tensorboards_loader(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    writer = tensorboard_events.EventWriter(tmp_path, start_step=7)
    writer.scalars(7, {"train/loss": 2.5, "eval/loss": 3.25})
    writer.scalars(2**40, {"train/lr": 1e-4})  # int64 steps beyond 32 bits
    writer.close()
    events = list(LegacyEventFileLoader(str(writer.path)).Load())  # the events as written, not migrated
    assert events[0].file_version == "brain.Event:2"
    assert events[1].step == 7 and events[1].session_log.status == events[1].session_log.START
    values = {(event.step, value.tag): value.simple_value for event in events[2:] for value in event.summary.value}
    assert values == {(7, "train/loss"): 2.5, (7, "eval/loss"): 3.25, (2**40, "train/lr"): pytest.approx(1e-4, rel=1e-6)}
    assert all(event.wall_time > 1.7e9 for event in events)


def test_tracking_is_off_by_default_and_may_change_when_a_run_resumes():
    config = config_module.load(DEMO_CONFIG)
    assert (config.tracking.tensorboard, config.tracking.wandb, config.tracking.mlflow) == (False, False, False)
    assert config_module.resume_safe("tracking.wandb") and not config_module.resume_safe("train.learning_rate")


def test_an_unknown_tracker_is_named_with_the_known_ones():
    with pytest.raises(ConfigError) as caught:
        config_module.load(DEMO_CONFIG, ["tracking.tensorbord=true"])
    assert "tracking.tensorbord" in str(caught.value) and "tensorboard" in str(caught.value)


@pytest.mark.parametrize("stack, status", [("cpu", "ok"), ("cu121-torch251-pypi", "error")])
def test_preflight_looks_for_the_trackers_in_the_lock_of_the_stack_a_job_runs(stack, status):
    config = config_module.load(DEMO_CONFIG, [f"stack={stack}", "tracking.wandb=true", "tracking.mlflow=true"])
    checks = [check for check in env_checks.dependencies(config, "slurm", strict_env=False) if check.name == "tracking"]
    assert [check.status for check in checks] == ([status] if status == "ok" else [status, status])
    if status == "error":
        assert "tracking.wandb is on, but the lock of stack cu121-torch251-pypi has no wandb" in checks[0].summary
        assert "tracking.mlflow: false" in checks[1].fix


def test_a_tracker_failing_while_logging_is_dropped_with_one_warning_and_the_others_go_on(tmp_path, capsys):
    from runner.training.tracking import TensorBoard, Trackers

    class Outage:  # a tracker whose service went away mid-run
        name = "wandb"

        def log(self, step, values):
            raise ConnectionError("api.wandb.ai unreachable")

        def close(self, finished):
            pass

    board = TensorBoard(tmp_path, resumed_from_step=None)
    trackers = Trackers([Outage(), board])
    for step in (1, 2):
        trackers.log({"step": step, "loss": 1.0 / step, "eval_loss": None})
    trackers.close(finished=True)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and "wandb failed (ConnectionError: api.wandb.ai unreachable)" in warnings[0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(s.step, s.value) for s in events.Scalars("train/loss")] == [(1, 1.0), (2, 0.5)]
