"""`lockstep monitor`: frames rendered from synthetic run directories on real files (rate and ETA, a resume's
gap, silence, not started, stopped, finished, checkpoints), the Modal mirror up to the volume service,
and the command's own behaviour (one frame, a terminal, Ctrl-C, a wrong path)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import pytest

from runner.backends import jobs
from runner.backends.base import JobHandle, JobSpec
from runner.cli import main as cli_main
from runner.reports import monitor, monitor_sources
from runner.reports.monitor_sources import DirectorySource, ModalMirror, VolumeEntry
from runner.training import metrics
from runner.training.checkpoint import CheckpointStore
from tests.helpers import REPO_ROOT, lockstep_env

T0 = 1_700_000_000.0  # when the synthetic runs start


def write_rows(run_dir: Path, rows: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / metrics.METRICS_FILE).open("a") as handle:
        for row in rows:
            handle.write(json.dumps({column: row.get(column) for column in metrics.COLUMNS}) + "\n")


def train_rows(first: int, last: int, *, start: float, every_s: float, loss: float = 2.0) -> list[dict]:
    """One row per step, `every_s` apart, the first at `start`; the loss falls a little each step."""
    return [{"step": step, "epoch": step / 10, "loss": loss - 0.01 * step, "lr": 1e-3, "tokens_per_s": 1500.0,
             "memory_mb": 800.0 + step, "time": start + (step - first) * every_s} for step in range(first, last + 1)]


def add_attempt(run_dir: Path, started: float, resumed_from: int | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds")
    with (run_dir / "attempts.jsonl").open("a") as handle:
        handle.write(json.dumps({"attempt": 0, "started_at": stamp, "backend": "local", "host": "node7",
                                 "resumed_from_step": resumed_from}) + "\n")


def training_run(run_dir: Path, *, total: int = 100, last: int = 20, every_s: float = 2.0) -> Path:
    """An attempt started at T0 whose first step was logged 10 s later, one step every `every_s`."""
    add_attempt(run_dir, T0)
    metrics.write_plan(run_dir, total)
    write_rows(run_dir, train_rows(1, last, start=T0 + 10, every_s=every_s))
    return run_dir


def frame(run_dir: Path, now: float) -> str:
    return monitor.render(snapshot(run_dir), now)


def snapshot(run_dir: Path) -> monitor.Snapshot:
    return monitor.collect(run_dir, DirectorySource(run_dir), jobs.latest(run_dir))


def line(text: str, label: str) -> str:
    """The value on the frame's line labelled `label`."""
    return next(row for row in text.splitlines() if row.startswith(label + " "))[len(label):].strip()


def test_progress_rate_and_eta_come_from_the_rows_times(tmp_path):
    run = training_run(tmp_path / "run")
    write_rows(run, [{"step": 10, "epoch": 1.0, "eval_loss": 1.5, "time": T0 + 29}, {"step": 20, "epoch": 2.0, "eval_loss": 1.7, "time": T0 + 49}])
    last = T0 + 10 + 19 * 2  # step 20
    text = frame(run, last)
    assert "run        run · training" in text
    assert line(text, "progress").startswith("step 20/100  [██████░░░") and "20.0%" in text
    # 0.5 steps/s, 80 steps left: 160 s, less the time already spent since the last row.
    assert "ETA 2m40s" in line(text, "time") and "0.50 steps/s" in text and "elapsed 48s" in text
    assert "ETA 2m30s" in frame(run, T0 + 49 + 10)  # 10 s after the last row, the evaluation's
    train = line(text, "train loss")
    spark = train.split()[-1]  # one block per loss, from the highest (first) to the lowest (last)
    assert train.startswith("1.8000") and len(spark) == 20 and spark[0] == "█" and spark[-1] == "▁" and list(spark) == sorted(spark, reverse=True)
    assert line(text, "eval loss").endswith("1.7000 (step 20) · best 1.5000 (step 10)")
    assert line(text, "tokens/s").endswith("1,500") and line(text, "lr").endswith("0.001")
    assert line(text, "memory").endswith("820 MiB · peak 820 MiB") and line(text, "epoch").endswith("2.00")
    assert line(text, "attempts").endswith("1 (this one on node7, local)")
    assert "warning" not in text and monitor.ended(snapshot(run)) is False


def test_a_single_row_gives_a_first_eta_from_the_attempts_start(tmp_path):
    run = training_run(tmp_path / "run", last=1)
    assert monitor.step_rate(snapshot(run)) == pytest.approx(0.1)  # 1 step in the 10 s since the start
    assert "ETA 16m30s" in frame(run, T0 + 10)


def test_rows_without_times_from_an_older_lockstep_still_render(tmp_path):
    run = tmp_path / "run"
    add_attempt(run, T0)
    metrics.write_plan(run, 100)
    write_rows(run, [row | {"time": None} for row in train_rows(1, 5, start=T0, every_s=1.0)])
    text = frame(run, T0 + 600)
    assert "step 5/100" in text and "ETA unknown: the rows carry no time" in text and "warning" not in text


def test_a_resume_gap_does_not_slow_the_rate(tmp_path):
    run = training_run(tmp_path / "run", total=40, last=8, every_s=1.0)  # steps 9-10 were lost with the crash
    later = T0 + 3600
    add_attempt(run, later, resumed_from=8)
    write_rows(run, train_rows(9, 20, start=later + 30, every_s=2.0))
    now = later + 30 + 11 * 2
    assert monitor.step_rate(snapshot(run)) == pytest.approx(0.5)  # this attempt's speed, not 20 steps over an hour
    text = frame(run, now)
    assert "ETA 40s" in text and "elapsed 1h00m" in text
    assert line(text, "attempts").endswith("2 (this one on node7, local), resumed from step 8")


def test_a_quiet_run_gets_a_warning_that_names_a_save_in_progress(tmp_path):
    run = training_run(tmp_path / "run")
    last = T0 + 48
    assert "warning" not in frame(run, last + 50)  # 25 intervals, but under a minute
    text = frame(run, last + 300)
    assert line(text, "warning") == "no new row for 5m00s (one came every 2s): the run may be stalled or killed"
    assert "ETA unknown while no rows arrive" in text  # not a countdown to zero
    CheckpointStore(run).start(30)
    assert line(frame(run, last + 300), "warning").endswith("killed; the checkpoint of step 30 is being written")


def test_an_empty_directory_is_a_run_not_started(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    text = frame(run, T0)
    assert text.splitlines()[0] == "run        run · not started"
    assert "waiting for the run to start" in text and "progress" not in text and "ETA" not in text


def test_a_started_attempt_without_steps_waits_for_the_first(tmp_path):
    run = tmp_path / "run"
    add_attempt(run, T0)
    metrics.write_plan(run, 60)
    text = frame(run, T0 + 30)
    assert "training" in text and line(text, "progress").endswith("step 0/60, waiting for the first step")
    assert "ETA unknown" in text and line(text, "checkpoint").endswith("none yet")


def test_a_finished_run_shows_its_end_and_ends_the_watch(tmp_path):
    run = training_run(tmp_path / "run", total=40, last=40)
    (run / "metrics.csv").write_text("written at the end\n")
    (run / "summary.json").write_text(json.dumps({"steps": 40, "wall_time_s": 88.0}))
    text = frame(run, T0 + 5000)
    assert "run · finished" in text and "step 40/40" in text and "100.0%" in text
    assert "ETA" not in text and "warning" not in text and "elapsed 1m28s" in text  # to the last row, not to now
    assert monitor.ended(snapshot(run))


def test_a_run_that_wrote_its_progress_after_its_last_row_is_stopped_until_it_resumes(tmp_path):
    run = training_run(tmp_path / "run")
    (run / "metrics.csv").write_text("written when stopped\n")
    os.utime(run / "metrics.csv", (T0 + 50, T0 + 50))
    text = frame(run, T0 + 900)
    assert "run · stopped" in text and "the same train command resumes it" in text
    assert "ETA" not in text and "warning" not in text
    assert not monitor.ended(snapshot(run))  # a local run may be started again: keep watching
    add_attempt(run, T0 + 1000, resumed_from=20)
    assert "run · training" in frame(run, T0 + 1005)


def test_checkpoints_are_judged_by_their_marker_and_a_save_in_progress_is_shown(tmp_path):
    run = training_run(tmp_path / "run")
    store = CheckpointStore(run)
    for step in (10, 20):
        (store.start(step) / "adapter.safetensors").write_bytes(b"w" * 10)
        store.commit(step, {})
    os.utime(run / "checkpoints" / "step-00000020" / "COMPLETE.json", (T0 + 40, T0 + 40))
    (run / "checkpoints" / "step-00000025").mkdir()  # no marker: never complete
    store.start(30)
    (run / "checkpoints" / ".trash-step-00000005").mkdir()
    assert line(frame(run, T0 + 100), "checkpoint").endswith("step 20, written 1m00s ago · writing step 30")
    entries = monitor_sources.list_checkpoints(run)
    assert [(e.step, e.complete, e.staging) for e in entries] == [(10, True, False), (20, True, False), (25, False, False), (30, False, True)]


def test_sparkline_and_durations():
    assert monitor.sparkline([3.0, 2.0, 1.0]) == "█▅▁" and monitor.sparkline([1.0, 1.0]) == "▅▅"
    assert [monitor.duration(s) for s in (0.4, 59, 61, 3599, 3600 * 5 + 120, 86400 * 3 + 7200)] == ["0s", "59s", "1m01s", "59m59s", "5h02m", "3d02h"]


def test_ascii_frames_for_terminals_that_cannot_show_blocks(tmp_path):
    run = training_run(tmp_path / "run")
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    assert monitor.watch(run, once=True, out=out) == 0
    out.seek(0)
    text = out.read()
    assert "[######" in text and "run - training" in text and "(min 1.8000 of the last 20)" in text


# ---- the command ----

def test_once_prints_one_frame_without_terminal_codes(tmp_path, capsys):
    run = training_run(tmp_path / "run")
    assert cli_main(["monitor", str(run), "--once"]) == 0
    out = capsys.readouterr().out
    assert out.count("run        run") == 1 and "\x1b" not in out and "step 20/100" in out


def test_a_terminal_is_cleared_before_each_frame_and_a_finished_run_ends_the_watch(tmp_path):
    run = training_run(tmp_path / "run", total=20, last=20)
    (run / "summary.json").write_text(json.dumps({"steps": 20}))
    leader, follower = os.openpty()
    with os.fdopen(follower, "w", encoding="utf-8") as terminal:
        assert monitor.watch(run, refresh=60, out=terminal) == 0  # returns at once: nothing more will happen
    text = os.read(leader, 65536).decode()
    os.close(leader)
    assert text.startswith(monitor.CLEAR) and "finished" in text


def test_ctrl_c_stops_watching_quietly(tmp_path):
    run = training_run(tmp_path / "run")
    process = subprocess.Popen([sys.executable, "-m", "runner", "monitor", str(run), "--refresh", "0.2"], cwd=REPO_ROOT, env=lockstep_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().startswith("run ")  # the first frame is out: it is watching
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0 and err == ""


def test_a_missing_run_directory_is_an_error_naming_it(tmp_path, capsys):
    missing = tmp_path / "no such run"
    assert cli_main(["monitor", str(missing), "--once"]) == 5
    err = capsys.readouterr().err
    assert f"{missing} does not exist" in err and "output_dir" in err


def test_a_directory_without_a_run_is_an_error_that_lists_the_runs_in_it(tmp_path, capsys):
    training_run(tmp_path / "demo")
    (tmp_path / "notes.txt").write_text("not a run")
    assert cli_main(["monitor", str(tmp_path), "--once"]) == 5
    assert "holds no lockstep run" in (err := capsys.readouterr().err) and "runs in it: demo" in err


def test_refresh_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["monitor", str(tmp_path), "--refresh", "0"])
    assert exit_info.value.code == 2 and "not a positive number of seconds" in capsys.readouterr().err


# ---- a Modal run, read from its volume into a local mirror ----

class DirectoryVolume:
    """Modal's volume service, which cannot be reached from here: a local directory holding the volume's
    contents, answering with paths relative to the directory listed as Modal's listdir does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reads: list[str] = []
        self.listed: list[str] = []

    def listdir(self, path: str, recursive: bool = False) -> list[VolumeEntry]:
        self.listed.append(path)
        base = self.root / path
        if not base.is_dir():
            return []
        found = base.rglob("*") if recursive else base.iterdir()
        return [VolumeEntry(p.relative_to(base).as_posix(), p.is_dir(), p.stat().st_mtime, p.stat().st_size) for p in found]

    def read(self, path: str) -> bytes:
        self.reads.append(path)
        return (self.root / path).read_bytes()


class SdkVolumeOnDirectory:
    """The modal SDK's Volume, answering from a local directory: entries named from the volume's root, files in chunks."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def listdir(self, path: str, *, recursive: bool = False) -> list:
        from modal.exception import NotFoundError
        from modal.volume import FileEntry, FileEntryType

        base = self.root / path.lstrip("/")
        if not base.exists():
            raise NotFoundError(f"No such file or directory: {path}")
        found = base.rglob("*") if recursive else base.iterdir()
        return [FileEntry(path=p.relative_to(self.root).as_posix(), type=FileEntryType.DIRECTORY if p.is_dir() else FileEntryType.FILE,
                          mtime=int(p.stat().st_mtime), size=p.stat().st_size) for p in found]

    def read_file(self, path: str):
        data = (self.root / path).read_bytes()
        yield from (data[i:i + 7] for i in range(0, len(data), 7))


def test_the_sdk_adapter_lists_relative_to_the_directory_asked_for(tmp_path):
    pytest.importorskip("modal", reason="the modal client is part of the cpu stack (lockfiles/cpu.in)")
    run = training_run(tmp_path / "volume" / "runs" / "a b", total=10, last=3)
    (CheckpointStore(run).start(2) / "x").write_bytes(b"x")
    volume = monitor_sources.ModalVolume(SdkVolumeOnDirectory(tmp_path / "volume"))
    top = {entry.path: entry for entry in volume.listdir("runs/a b")}
    assert {"metrics.jsonl", "plan.json", "attempts.jsonl", "checkpoints"} == set(top) and top["checkpoints"].is_dir
    assert not top["plan.json"].is_dir and top["plan.json"].size == (run / "plan.json").stat().st_size
    assert {entry.path for entry in volume.listdir("/runs/a b/checkpoints", recursive=True)} == {".staging-step-00000002", ".staging-step-00000002/x"}
    assert volume.listdir("runs/not yet") == []  # a run that has not written its directory yet
    assert volume.read("runs/a b/metrics.jsonl") == (run / "metrics.jsonl").read_bytes()


def modal_submission(tmp_path: Path) -> tuple[Path, JobHandle, str]:
    """A run submitted to Modal as `lockstep train --backend modal` records it: its plan and handle, in RUN/jobs/<id>/."""
    from runner import config as config_module
    from runner.backends import modal_plan
    from runner.backends.modal_backend import Modal
    from tests.helpers import hostile_project

    config_path = hostile_project(tmp_path, "project", "runs/my run")
    spec = JobSpec(config=config_module.load(config_path, ["modal.volume=team-runs"]), config_path=config_path,
                   cwd=config_path.parent, submission_id="20261123T120000000000Z")
    submission = Modal().prepare(spec)
    jobs.write_files(spec.job_dir, submission)
    plan = json.loads(submission.files["modal-plan.json"])
    handle = JobHandle(backend="modal", job_id="fc-monitor", job_dir=spec.job_dir, submitted_at=jobs.now(),
                       details={"app_id": "ap-monitor", "fetch_results": plan["fetch_results"]})
    jobs.save(handle)
    return spec.run_dir, handle, str(PurePosixPath(plan["call"]["run_dir"]).relative_to(modal_plan.VOLUME_MOUNT))


def test_a_modal_run_is_mirrored_from_its_volume_and_rendered_from_the_mirror(tmp_path, monkeypatch):
    run_dir, handle, remote = modal_submission(tmp_path)
    assert remote == "runs/my run"
    volume_root = tmp_path / "volume"
    in_volume = training_run(volume_root / remote, total=50, last=12)
    store = CheckpointStore(in_volume)
    (store.start(10) / "adapter_model.safetensors").write_bytes(b"w" * 4096)
    store.commit(10, {})
    store.start(12)
    volume = DirectoryVolume(volume_root)
    opened: list[str] = []
    monkeypatch.setattr(monitor_sources, "open_volume", lambda name: opened.append(name) or volume)

    mirror = monitor_sources.source_for(run_dir, jobs.latest(run_dir))
    assert isinstance(mirror, ModalMirror) and mirror.refresh() is None
    assert opened == ["team-runs"] and volume.listed == [remote, f"{remote}/checkpoints"]
    # Only the small files travel, each to the mirror under the submission's directory; never a checkpoint's contents.
    assert sorted(volume.reads) == sorted(f"{remote}/{name}" for name in ("metrics.jsonl", "plan.json", "attempts.jsonl"))
    assert mirror.data_dir == handle.job_dir / "monitor"
    assert (mirror.data_dir / "metrics.jsonl").read_bytes() == (in_volume / "metrics.jsonl").read_bytes()
    assert [(e.step, e.complete, e.staging) for e in mirror.checkpoints()] == [(10, True, False), (12, False, True)]

    snap = monitor.collect(run_dir, mirror, jobs.latest(run_dir))
    text = monitor.render(snap, T0 + 40)
    assert "step 12/50" in text and "modal volume team-runs:/runs/my run" in text
    assert line(text, "checkpoint").startswith("step 10") and "writing step 12" in text
    assert snap.job == "modal job fc-monitor" and snap.job_state is not None  # asked of Modal, as `lockstep status` does

    volume.reads.clear()
    write_rows(in_volume, train_rows(13, 13, start=T0 + 40, every_s=2.0))
    (in_volume / "summary.json").write_text(json.dumps({"steps": 13}))
    assert mirror.refresh() is None
    assert sorted(volume.reads) == [f"{remote}/metrics.jsonl", f"{remote}/summary.json"]  # unchanged files stay as copied
    assert "finished" in monitor.render(monitor.collect(run_dir, mirror, None), T0 + 60)


def test_the_monitor_command_renders_a_modal_run_from_its_mirror(tmp_path, monkeypatch, capsys):
    run_dir, _, remote = modal_submission(tmp_path)
    training_run(tmp_path / "volume" / remote, total=50, last=12)
    monkeypatch.setattr(monitor_sources, "open_volume", lambda name: DirectoryVolume(tmp_path / "volume"))
    assert cli_main(["monitor", str(run_dir), "--once"]) == 0
    out = capsys.readouterr().out
    assert "step 12/50" in out and "modal job fc-monitor: " in out


def test_an_unreadable_volume_is_a_note_and_the_last_copy_is_shown(tmp_path, monkeypatch):
    run_dir, handle, remote = modal_submission(tmp_path)
    training_run(tmp_path / "volume" / remote, total=50, last=12)
    monkeypatch.setattr(monitor_sources, "open_volume", lambda name: DirectoryVolume(tmp_path / "volume"))
    source = monitor_sources.source_for(run_dir, handle)
    assert source.refresh() is None
    # No Modal credentials here: the real SDK refuses before any network call.
    monkeypatch.undo()
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))
    source = monitor_sources.source_for(run_dir, handle)
    started = time.monotonic()
    text = monitor.render(monitor.collect(run_dir, source, None), T0 + 40)
    assert time.monotonic() - started < 20
    assert "could not read modal volume team-runs" in line(text, "note") and "modal token new" in text
    assert "step 12/50" in text  # the copy made before
