"""Crash-proof training through the real `lockstep` command: SIGKILL at random moments, SIGTERM,
damaged checkpoints and changed configs, on the embedded demo."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.rundir import BEFORE_RUN
from runner.training import checkpoint, metrics
from tests.helpers import DEMO_CONFIG, REPO_ROOT, lockstep_env, run_lockstep, start_lockstep
from tests.integration.run_checks import (
    assert_complete_run,
    assert_same_training,
    logged_step,
    staging_dirs,
    wait_until,
)

pytestmark = pytest.mark.slow

EXIT_REQUEUE = 75
DETERMINISTIC = ("--set", "train.deterministic=true")


def train_args(run_dir: Path, *extra: str) -> tuple[str, ...]:
    return ("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", *extra)


def training_started(log: Path) -> bool:
    # The progress bar ("train:  12%|...") appears once start-up (preflight, cleanup, resume) is over and steps run.
    return re.search(r"train: +\d+%\|", log.read_text(errors="replace")) is not None


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The demo in deterministic mode, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = run_lockstep(*train_args(run_dir, *DETERMINISTIC))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(reference_run, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    run_dir = tmp_path / "killed"
    args = train_args(run_dir, *DETERMINISTIC)
    # Five kills at random steps (one per stretch of the run, so each attempt gets further), at a
    # random moment inside the step; plus kills aimed at the moment a checkpoint is being written.
    targets = [rng.randint(lo, lo + 24) for lo in (3, 31, 59, 87, 115)]
    plan = targets[:2] + ["during-save"] + targets[2:]
    attempts, missed_saves, log_after_save_kill = 0, 0, None

    def attempt(target: int | str) -> None:
        nonlocal attempts
        attempts += 1
        log = tmp_path / f"attempt-{attempts}.log"
        process = start_lockstep(*args, stderr_to=log)
        wait_until(lambda: training_started(log), process, "training started")
        if target == "during-save":
            wait_until(lambda: staging_dirs(run_dir), process, "a checkpoint save", pause=0)
        else:
            wait_until(lambda: logged_step(run_dir) >= target, process, f"step {target}")
            time.sleep(rng.uniform(0, 0.05))  # somewhere inside the next step
        process.send_signal(signal.SIGKILL)
        process.wait()

    for target in plan:
        attempt(target)
        # A save takes tens of milliseconds; if it completed before the kill landed, aim at the next one.
        while target == "during-save" and not staging_dirs(run_dir):
            missed_saves += 1
            assert missed_saves < 5, f"no kill landed inside a checkpoint save (seed {seed})"
            attempt(target)
        if target == "during-save":
            log_after_save_kill = tmp_path / f"attempt-{attempts + 1}.log"
    final_log = tmp_path / "final.log"
    final = start_lockstep(*args, stderr_to=final_log)
    assert final.wait(timeout=600) == 0, final_log.read_text()[-3000:]

    context = f"(kills at steps {targets} and during a save; seed {seed})"
    after_save_kill = log_after_save_kill.read_text()
    assert "removed an unfinished checkpoint save: .staging-step-" in after_save_kill, after_save_kill[-2000:]
    assert re.search(r"resuming from step-\d{8}", final_log.read_text())
    assert_same_training(run_dir, reference_run, context)
    summary = assert_complete_run(run_dir)
    assert summary["attempts"] == attempts + 1
    assert not staging_dirs(run_dir)


def test_kills_at_each_moment_of_a_background_write_resume_bitwise_identically(reference_run, tmp_path):
    """SIGKILL while a checkpoint is written behind the training loop: with its files written but no marker, with
    the marker but not yet renamed into place, and in place while its storage hook runs. Each next start resumes
    from what is durable (an earlier checkpoint, or the one whose hook was cut short), and the run ends with the
    uninterrupted run's losses and adapter bytes."""
    run_dir = tmp_path / "run"
    sets = ("train.deterministic=true",)
    plan = [("before-marker", 40), ("before-rename", 70), ("in-hook", 100)]
    for point, from_step in plan:
        held = run_dir.with_name(run_dir.name + f".at-{point}")
        log = tmp_path / f"{point}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "tests.kill_points", point, str(from_step), str(run_dir), *sets],
                                       cwd=REPO_ROOT, env=lockstep_env(), stdout=subprocess.DEVNULL, stderr=stderr)
        wait_until(held.exists, process, f"the write of a checkpoint at step {from_step} or later, {point}", pause=0.01)
        step = int(held.read_text())
        process.send_signal(signal.SIGKILL)
        process.wait()
        staging, final = run_dir / "checkpoints" / f".staging-step-{step:08d}", run_dir / "checkpoints" / f"step-{step:08d}"
        if point == "in-hook":
            assert checkpoint.verify(final) is None  # in place and whole: the next start resumes from it
        else:
            assert (staging / checkpoint.MARKER).exists() == (point == "before-rename") and not final.exists()
        assert logged_step(run_dir) >= step  # training went on while the checkpoint was being written
    final_log = tmp_path / "final.log"
    process = start_lockstep(*train_args(run_dir, *DETERMINISTIC), stderr_to=final_log)
    assert process.wait(timeout=600) == 0, final_log.read_text()[-3000:]
    assert f"resuming from step-{step:08d}" in final_log.read_text()  # the checkpoint whose storage hook was cut short
    assert_same_training(run_dir, reference_run, "(kills inside background writes)")
    assert assert_complete_run(run_dir)["attempts"] == len(plan) + 1
    assert not staging_dirs(run_dir)


def stop_with_sigterm(run_dir: Path, args: tuple[str, ...], at_step: int, log: Path) -> tuple[int, int]:
    """Send SIGTERM at `at_step`, and SIGINT while the checkpoint is being written; return (signalled step, exit code)."""
    process = start_lockstep(*args, stderr_to=log)
    wait_until(lambda: logged_step(run_dir) >= at_step, process, f"step {at_step}")
    signalled = logged_step(run_dir)
    process.send_signal(signal.SIGTERM)
    try:
        wait_until(lambda: staging_dirs(run_dir), process, "the stop checkpoint", timeout=60, pause=0)
        process.send_signal(signal.SIGINT)  # a second, impatient signal in the middle of the save
    except AssertionError:
        pass  # the save was over before it could be seen; the exit code and checkpoint are still checked
    return signalled, process.wait(timeout=300)


def test_sigterm_checkpoints_at_the_next_step_and_the_next_start_continues(tmp_path):
    run_dir = tmp_path / "preempted"
    log = tmp_path / "stopped.log"
    signalled, code = stop_with_sigterm(run_dir, train_args(run_dir), at_step=20, log=log)
    stderr = log.read_text()
    assert code == EXIT_REQUEUE, stderr[-3000:]
    match = re.search(r"lockstep: stopped: SIGTERM received: checkpoint written at step (\d+)", stderr)
    assert match, stderr[-3000:]
    stopped_at = int(match.group(1))
    assert signalled <= stopped_at <= signalled + 2  # the step under way when the signal came, or the next
    newest, rejected = checkpoint.CheckpointStore(run_dir).newest_valid()
    assert newest.step == stopped_at and rejected == [] and not staging_dirs(run_dir)
    assert not (run_dir / "summary.json").exists() and (run_dir / "plots" / "loss.png").is_file()

    resumed = run_lockstep(*train_args(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step-{stopped_at:08d}" in resumed.stderr
    summary = assert_complete_run(run_dir)
    assert summary["steps"] == 144 and summary["attempts"] == 2 and summary["resumed_from_step"] == stopped_at
    steps = [row["step"] for row in metrics.read(run_dir) if row["loss"] is not None]
    assert steps == sorted(set(steps)), "a step was logged twice"


def test_the_summary_of_a_resumed_run_describes_the_whole_run(tmp_path, reference_run):
    run_dir = tmp_path / "preempted"
    _, code = stop_with_sigterm(run_dir, train_args(run_dir), at_step=60, log=tmp_path / "stopped.log")
    assert code == EXIT_REQUEUE, (tmp_path / "stopped.log").read_text()[-3000:]
    assert run_lockstep(*train_args(run_dir)).returncode == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    whole_run = json.loads((reference_run / "summary.json").read_text())
    last = summary["last_attempt"]
    assert summary["train_tokens"] == whole_run["train_tokens"] > last["train_tokens"] > 0  # the same data, once
    assert summary["wall_time_s"] > last["wall_time_s"] > 0 and summary["checkpoints_saved"] > last["checkpoints_saved"] >= 1
    assert summary["tokens_per_s"] == pytest.approx(summary["train_tokens"] / summary["wall_time_s"], rel=1e-3)
    assert last["resumed_from_step"] == summary["resumed_from_step"] >= 60


# Runs whose last step is not the end of an epoch (48 steps make one): a trainer that resumes at the last step
# would skip into the unfinished epoch and train one step more.
MID_EPOCH = {"max_steps": ("--set", "train.max_steps=12"), "epochs": ("--set", "train.epochs=0.25")}
# Both endings reach the same code (the step count is known before training); `make test` runs one.
ENDINGS = [pytest.param(MID_EPOCH["max_steps"], id="max_steps"), pytest.param(MID_EPOCH["epochs"], id="epochs", marks=pytest.mark.extended)]
FINAL = "step-00000012"


@pytest.mark.parametrize("ending", ENDINGS)
def test_killed_mid_run_and_after_the_final_checkpoint_a_mid_epoch_run_ends_as_an_uninterrupted_one(tmp_path, ending):
    settings = (*DETERMINISTIC, *ending, "--set", "checkpoint.every_percent=25")
    reference = tmp_path / "reference"
    assert run_lockstep(*train_args(reference, *settings)).returncode == 0
    run_dir = tmp_path / "killed"
    args = train_args(run_dir, *settings)

    first = start_lockstep(*args, stderr_to=tmp_path / "first.log")
    wait_until(lambda: logged_step(run_dir) >= 5, first, "step 5")
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = start_lockstep(*args, stderr_to=tmp_path / "second.log")
    wait_until(lambda: (run_dir / "checkpoints" / FINAL).is_dir(), second, "the final checkpoint", pause=0.001)
    second.send_signal(signal.SIGKILL)  # the outputs (plots, summary) take most of a second after it
    second.wait()
    if (run_dir / "summary.json").exists():  # the kill came too late: the same state, made by hand
        for name in ("summary.json", "adapter"):
            shutil.rmtree(run_dir / name) if (run_dir / name).is_dir() else (run_dir / name).unlink()

    final = run_lockstep(*args)
    assert final.returncode == 0, final.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["attempts"] == 3
    assert_same_training(run_dir, reference, f"({ending})")
    assert_complete_run(run_dir, min_eval_drop=0.2)
    assert (run_dir / "adapter" / "adapter_config.json").read_bytes() == (reference / "adapter" / "adapter_config.json").read_bytes()
    assert summary["train_tokens"] == json.loads((reference / "summary.json").read_text())["train_tokens"]
    assert f"resuming from {FINAL}" in final.stderr and f"step 12 of 12 is done: writing the run's outputs from {FINAL}" in final.stderr
    assert "checkpoint saved" not in final.stderr and summary["last_attempt"]["train_tokens"] == 0  # nothing was trained


def test_an_empty_config_yaml_is_no_obstacle_the_checkpoints_record_the_config(stopped_short_run, tmp_path):
    run_dir, (newest, _, _) = copy_run(stopped_short_run, tmp_path)
    (run_dir / "config.yaml").write_text("")  # a power loss in the middle of rewriting it
    changed = run_lockstep(*train_args(run_dir, *SHORT, "--set", "train.learning_rate=1e-3"))
    assert changed.returncode == 7 and "different train.learning_rate;" in changed.stderr, changed.stderr[-3000:]
    result = run_lockstep(*train_args(run_dir, *SHORT))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from step-{newest:08d}" in result.stderr
    assert assert_complete_run(run_dir)["steps"] == 30
    assert "train:" in (run_dir / "config.yaml").read_text()


def test_a_damaged_metrics_line_and_a_torn_attempts_line_are_skipped_and_named(stopped_short_run, tmp_path):
    run_dir, (newest, _, _) = copy_run(stopped_short_run, tmp_path)
    metrics_lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    metrics_lines[2] = '{"step": 2, "loss": 4.1, "eval_lo\n'  # a damaged row in the middle
    (run_dir / "metrics.jsonl").write_text("".join(metrics_lines))
    attempts = run_dir / "attempts.jsonl"
    attempts.write_text(attempts.read_text() + '{"attempt": 2, "host": "x", "backe')  # an attempt killed while recording itself

    result = run_lockstep(*train_args(run_dir, *SHORT))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{run_dir / 'metrics.jsonl'}:3 is not a metrics row (damaged or cut short); it was skipped" in result.stderr
    assert f"resuming from step-{newest:08d}" in result.stderr
    lines = attempts.read_text().splitlines()
    assert len(lines) == 3 and lines[1].endswith('"backe') and json.loads(lines[2])["attempt"] == 3  # never glued together
    assert json.loads((run_dir / "summary.json").read_text())["attempts"] == 3

    report = run_lockstep("report", str(run_dir))
    assert report.returncode == 0, report.stderr[-3000:]
    assert f"{attempts}:2 is damaged; the report skips it" in report.stderr


def test_retention_is_applied_at_start_after_a_kill_between_a_save_and_its_pruning(stopped_short_run, tmp_path):
    run_dir, steps = copy_run(stopped_short_run, tmp_path)
    shutil.copytree(run_dir / "checkpoints" / f"step-{steps[-1]:08d}", run_dir / "checkpoints" / "step-00000006")  # keep_last + 1
    log = tmp_path / "resumed.log"
    process = start_lockstep(*train_args(run_dir, *SHORT, "--set", "checkpoint.every_percent=100"), stderr_to=log)
    wait_until(lambda: training_started(log), process, "training started")
    process.send_signal(signal.SIGSTOP)  # before the next save (the last step), which would prune anyway
    try:
        assert sorted(c.step for c in checkpoint.CheckpointStore(run_dir).candidates()) == sorted(steps)
        assert "removed step-00000006: beyond checkpoint.keep_last=3" in log.read_text()
    finally:
        process.send_signal(signal.SIGCONT)
    assert process.wait(timeout=300) == 0, log.read_text()[-3000:]


def test_fresh_refuses_to_move_the_current_directory_from_under_itself(tmp_path):
    run_dir = tmp_path / "here"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    result = run_lockstep("train", str(DEMO_CONFIG), "--fresh", "--set", "output_dir=.", cwd=run_dir)
    assert result.returncode == 5, result.stderr[-3000:]
    assert "holds the current directory" in result.stderr and "Traceback" not in result.stderr
    assert (run_dir / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["here"]


SHORT = ("--set", "train.max_steps=30", "--set", "checkpoint.every_percent=20")


@pytest.fixture(scope="module")
def stopped_short_run(tmp_path_factory):
    """A 30-step run stopped by SIGTERM after step 20: checkpoints at 12, 18 and the stop step."""
    root = tmp_path_factory.mktemp("short")
    run_dir = root / "run"
    _, code = stop_with_sigterm(run_dir, train_args(run_dir, *SHORT), at_step=20, log=root / "stopped.log")
    assert code == EXIT_REQUEUE, (root / "stopped.log").read_text()[-3000:]
    steps = [c.step for c in checkpoint.CheckpointStore(run_dir).candidates()]
    assert len(steps) == 3 and steps[1:] == [18, 12], steps
    return run_dir


def copy_run(source: Path, tmp_path: Path) -> tuple[Path, list[int]]:
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    return run_dir, [c.step for c in checkpoint.CheckpointStore(run_dir).candidates()]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: f.write_bytes(f.read_bytes()[:1000]), "truncated or altered"),
        (lambda f: f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 1])), "does not match its sha256"),
    ],
    ids=["truncated", "altered"],
)
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(stopped_short_run, tmp_path, damage, reason):
    run_dir, (newest, previous, _) = copy_run(stopped_short_run, tmp_path)
    damage(run_dir / "checkpoints" / f"step-{newest:08d}" / "adapter_model.safetensors")
    result = run_lockstep(*train_args(run_dir, *SHORT))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"checkpoint step-{newest:08d} is unusable: adapter_model.safetensors" in result.stderr
    assert reason in result.stderr and "falling back to an earlier one" in result.stderr
    assert f"resuming from step-{previous:08d}" in result.stderr
    assert assert_complete_run(run_dir, min_eval_drop=0.3)["steps"] == 30


def test_config_change_that_alters_training_is_refused_and_named(stopped_short_run, tmp_path):
    run_dir, _ = copy_run(stopped_short_run, tmp_path)

    def run_files() -> list[tuple[Path, int]]:  # preflight rewrites its own report; the run itself must not change
        return sorted((p.relative_to(run_dir), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.name not in BEFORE_RUN)

    before = run_files()
    result = run_lockstep(*train_args(run_dir, *SHORT, "--set", "train.learning_rate=1e-3", "--set", "train.seed=7"))
    assert result.returncode == 7, result.stderr[-3000:]
    assert "different train.learning_rate, train.seed" in result.stderr and "--fresh" in result.stderr
    assert run_files() == before


def test_changed_data_contents_are_refused(stopped_short_run, tmp_path):
    run_dir, _ = copy_run(stopped_short_run, tmp_path)
    for saved in checkpoint.CheckpointStore(run_dir).candidates():  # each records the data it was trained on
        marker = json.loads((saved.path / checkpoint.MARKER).read_text())
        marker["data_sha256"]["train"] = "0" * 64  # as if the file had been edited since the run started
        (saved.path / checkpoint.MARKER).write_text(json.dumps(marker))
    result = run_lockstep(*train_args(run_dir, *SHORT))
    assert result.returncode == 7 and "data.train (file contents)" in result.stderr, result.stderr[-3000:]


def test_harmless_config_change_resumes_with_a_warning(stopped_short_run, tmp_path):
    run_dir, (newest, _, _) = copy_run(stopped_short_run, tmp_path)
    result = run_lockstep(*train_args(run_dir, *SHORT, "--set", "train.log_every_steps=2", "--set", "checkpoint.keep_last=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "continuing with changed checkpoint.keep_last, output_dir, train.log_every_steps" in result.stderr
    assert f"resuming from step-{newest:08d}" in result.stderr
    assert len(checkpoint.CheckpointStore(run_dir).candidates()) == 2


@pytest.fixture
def small_filesystem(tmpfs):
    """A 2.5 MiB tmpfs: room for about two demo checkpoints."""
    return tmpfs("2500k")


def test_full_filesystem_during_a_save_keeps_earlier_checkpoints_and_says_so(small_filesystem):
    run_dir = small_filesystem / "run"
    args = train_args(run_dir, *SHORT, "--set", "checkpoint.every_percent=10", "--set", "checkpoint.keep_last=10")
    refused = run_lockstep(*args)  # preflight sees ten checkpoints will not fit
    assert refused.returncode == 12 and "✗ disk" in refused.stderr and "--waive disk" in refused.stderr, refused.stderr[-3000:]
    result = run_lockstep(*args, "--waive", "disk")  # the failure preflight foresaw, met while saving
    assert result.returncode == 6, result.stderr[-3000:]
    match = re.search(r"could not write the checkpoint of step (\d+) in \S+ \([\d.]+ MiB free there\): .*; "
                      r"the newest intact checkpoint is (\S+)\. Free space", result.stderr)
    assert match, result.stderr[-3000:]
    store = checkpoint.CheckpointStore(run_dir)
    saved = store.candidates()
    assert len(saved) >= 1 and all(checkpoint.verify(c.path) is None for c in saved)
    assert match.group(2) == str(saved[0].path) and int(match.group(1)) > saved[0].step
    assert not staging_dirs(run_dir) and metrics.read(run_dir)

    subprocess.run(["mount", "-o", "remount,size=50m", str(small_filesystem)], check=True)
    resumed = run_lockstep(*args)  # room now: preflight passes
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step-{saved[0].step:08d}" in resumed.stderr
    assert assert_complete_run(run_dir)["steps"] == 30
