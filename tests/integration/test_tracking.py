"""Experiment trackers for real: the demo, stopped, killed and resumed, logs to TensorBoard (read back with
TensorBoard's own reader), Weights & Biases (offline mode, its run file read back) and MLflow (a local
store, read with its client); each shows every step once, with metrics.jsonl's values, in one tracker run."""

from __future__ import annotations

import json
import math
import signal

import pytest

from runner.training import metrics
from tests import wandb_records
from tests.helpers import DEMO_CONFIG, nothing_but_preflight, run_lockstep, start_lockstep
from tests.integration.run_checks import logged_step, wait_until

pytestmark = pytest.mark.slow

TRACKED = ("--set", "train.max_steps=30", "--set", "checkpoint.every_percent=20", "--set", "tracking.tensorboard=true",
           "--set", "tracking.wandb=true", "--set", "tracking.mlflow=true", "--set", "tracking.project=lockstep-tests")


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """The demo cut to 30 steps (checkpoints every 6): stopped by SIGTERM after step 6 (a preemption notice:
    checkpoint, trackers closed), SIGKILLed after step 15 (a crash: nothing closed), then run to the end.
    Returns the run directory, the tracking root and each attempt's resume step."""
    root = tmp_path_factory.mktemp("tracked")
    run_dir = root / "run"
    env = {"WANDB_MODE": "offline", "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true",
           "WANDB_SILENT": "true"}
    args = ("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", *TRACKED)
    for number, (at_step, stop) in enumerate(((6, signal.SIGTERM), (15, signal.SIGKILL)), start=1):
        process = start_lockstep(*args, stderr_to=root / f"attempt{number}.log", extra_env=env)
        wait_until(lambda: logged_step(run_dir) >= at_step, process, f"step {at_step}")
        process.send_signal(stop)
        assert process.wait(timeout=120) == (75 if stop == signal.SIGTERM else -signal.SIGKILL)
    finished = run_lockstep(*args, extra_env=env)
    assert finished.returncode == 0, finished.stderr[-3000:]
    attempts = [json.loads(line) for line in (run_dir / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 3
    return run_dir, root, [attempt["resumed_from_step"] for attempt in attempts]


def logged(run_dir, column):
    return {row["step"]: row[column] for row in metrics.read(run_dir) if row[column] is not None}


def test_tensorboard_shows_each_step_once_with_the_logged_values(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, _ = tracked_run
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert len(list((run_dir / "tensorboard").iterdir())) == 3  # one event file per attempt
    for tag, column in (("train/loss", "loss"), ("eval/loss", "eval_loss"), ("train/lr", "lr"), ("train/tokens_per_s", "tokens_per_s")):
        expected = logged(run_dir, column)
        scalars = events.Scalars(tag)
        # The resumed attempt's session start made TensorBoard drop what the killed one logged after the checkpoint.
        assert [s.step for s in scalars] == sorted(expected), tag
        assert all(math.isclose(s.value, expected[s.step], rel_tol=1e-6) for s in scalars), tag


def test_wandb_continues_the_same_run_with_the_logged_values(tracked_run):
    run_dir, _, (_, stopped_at, resumed_from) = tracked_run
    run_id = json.loads((run_dir / "tracking.json").read_text())["wandb_run_id"]
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 3
    # The crashed attempt's file is whatever W&B flushed before SIGKILL (often nothing, offline); the others are whole.
    first, last = wandb_records.history(files[0]), wandb_records.history(files[-1])
    assert wandb_records.run_id(files[0]) == wandb_records.run_id(files[-1]) == run_id
    expected = logged(run_dir, "loss")
    assert {row["_step"]: row["train/loss"] for row in first if "train/loss" in row} == {s: v for s, v in expected.items() if s <= stopped_at}
    assert {row["_step"]: row["train/loss"] for row in last if "train/loss" in row} == {s: v for s, v in expected.items() if s > resumed_from}
    final_eval = [row["eval/loss"] for row in last if "eval/loss" in row][-1]
    assert final_eval == json.loads((run_dir / "summary.json").read_text())["final_eval_loss"]


def test_mlflow_continues_the_same_run_with_params_tags_and_values(tracked_run, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store the run wrote, as the run was allowed to
    run_dir, root, _ = tracked_run
    run_id = json.loads((run_dir / "tracking.json").read_text())["mlflow_run_id"]
    client = mlflow.MlflowClient(tracking_uri=(root / "mlruns").as_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.max_steps"] == "30" and run.data.params["model.name_or_path"] == "builtin:tiny-llama"
    assert run.data.tags["lockstep.stack"] == "cpu" and run.data.tags["lockstep.attempt"] == "3"
    assert len(client.search_runs([client.get_experiment_by_name("lockstep-tests").experiment_id])) == 1
    history = sorted(client.get_metric_history(run_id, "train/loss"), key=lambda m: (m.step, m.timestamp))
    last_per_step = {m.step: m.value for m in history}  # a re-done step's later value wins, as in metrics.jsonl
    expected = logged(run_dir, "loss")
    assert last_per_step.keys() == expected.keys()
    assert all(math.isclose(last_per_step[step], value, rel_tol=1e-9) for step, value in expected.items())


def test_a_tracker_that_is_not_installed_stops_the_run_before_it_starts(pinned_python, tmp_path):
    run_dir = tmp_path / "untracked"
    args = ("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", "tracking.wandb=true")
    refused = run_lockstep(*args, python=pinned_python)
    assert refused.returncode == 12, refused.stderr[-3000:]
    assert "✗ tracking" in refused.stderr and "tracking.wandb is on, but this environment has no wandb" in refused.stderr
    assert nothing_but_preflight(run_dir)
    # Past a waived preflight, the job itself refuses before it writes or trains anything.
    waived = run_lockstep(*args, "--waive", "tracking", python=pinned_python)
    assert waived.returncode == 13, waived.stderr[-3000:]
    assert "tracking.wandb is true, but the wandb package is not installed" in waived.stderr and "tracking.wandb: false" in waived.stderr
    assert nothing_but_preflight(run_dir)
