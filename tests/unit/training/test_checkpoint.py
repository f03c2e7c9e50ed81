"""The checkpoint store on real files: atomic commit, verification, fallback, retention, failures."""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import pytest

from runner.errors import CheckpointError
from runner.training import checkpoint as ckpt
from runner.training import saver as saving_module
from runner.training.checkpoint import CheckpointStore
from runner.training.saver import Policy, call_storage_hook
from runner.training.signals import StopFlag


def save(store: CheckpointStore, step: int, payload: bytes = b"weights") -> Path:
    staging = store.start(step)
    (staging / "adapter_model.safetensors").write_bytes(payload * 100)
    (staging / "sub").mkdir()
    (staging / "sub" / "optimizer.pt").write_bytes(b"optimizer state %d" % step)
    return store.commit(step, {"config_sha256": "c" * 64}).path


def test_commit_moves_a_sealed_directory_into_place(tmp_path):
    store = CheckpointStore(tmp_path)
    path = save(store, 7)
    assert path == tmp_path / "checkpoints" / "step-00000007"
    assert not store.staging_dir(7).exists()
    marker = json.loads((path / ckpt.MARKER).read_text())
    assert marker["step"] == 7 and marker["config_sha256"] == "c" * 64
    assert set(marker["files"]) == {"adapter_model.safetensors", "sub/optimizer.pt"}
    assert marker["files"]["sub/optimizer.pt"]["size"] == len(b"optimizer state 7")
    assert ckpt.verify(path) is None


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: (p / ckpt.MARKER).unlink(), "no completion marker"),
        (lambda p: (p / ckpt.MARKER).write_text("{not json"), "unreadable completion marker"),
        (lambda p: (p / "sub" / "optimizer.pt").unlink(), "sub/optimizer.pt is missing"),
        (lambda p: _truncate(p / "adapter_model.safetensors"), "truncated or altered"),
        (lambda p: _flip_a_byte(p / "adapter_model.safetensors"), "does not match its sha256"),
    ],
)
def test_damaged_newest_checkpoint_is_rejected_with_its_reason(tmp_path, damage, reason):
    store = CheckpointStore(tmp_path)
    save(store, 10)
    damage(save(store, 20))
    newest, rejected = store.newest_valid()
    assert newest is not None and newest.step == 10
    assert [r.path.name for r in rejected] == ["step-00000020"]
    assert reason in rejected[0].reason


def test_a_staging_directory_is_not_a_checkpoint_and_is_removed_at_start(tmp_path):
    store = CheckpointStore(tmp_path)
    save(store, 5)
    staging = store.start(10)
    (staging / "adapter_model.safetensors").write_bytes(b"half written")
    newest, rejected = store.newest_valid()
    assert newest.step == 5 and rejected == []
    assert store.remove_abandoned() == ([staging], [])
    assert not staging.exists() and ckpt.verify(newest.path) is None


def test_a_file_where_a_checkpoint_belongs_is_replaced_without_leaving_trash(tmp_path):
    store = CheckpointStore(tmp_path)
    store.root.mkdir(parents=True)
    (store.root / "step-00000003").write_text("not a checkpoint")
    newest, rejected = store.newest_valid()
    assert newest is None and "unreadable completion marker" in rejected[0].reason
    path = save(store, 3)
    assert ckpt.verify(path) is None
    assert [p.name for p in store.root.iterdir()] == ["step-00000003"]


def test_leftovers_of_any_kind_are_removed_at_start(tmp_path):
    store = CheckpointStore(tmp_path)
    save(store, 1)
    (store.root / ".trash-step-00000002").write_text("a file, not a directory")
    locked = store.root / ".staging-step-00000004"
    (locked / "deep").mkdir(parents=True)
    (locked / "deep" / "optimizer.pt").write_bytes(b"x")
    (locked / "deep").chmod(0)  # unreadable: its entries cannot be listed until it is made readable again
    removed, stuck = store.remove_abandoned()
    assert sorted(p.name for p in removed) == [".staging-step-00000004", ".trash-step-00000002"] and stuck == []
    assert [p.name for p in store.root.iterdir()] == ["step-00000001"]


def saver(store: CheckpointStore, **options) -> saving_module.Saver:
    options = {"keep_last": 3, "meta": {"attempt": 1}, "after_checkpoint": None} | options
    return saving_module.Saver(store, Policy(every_percent=50, every_minutes=None, total_steps=4), **options)


def taking(store: CheckpointStore, step: int, write_started=None, release=None, fail: Exception | None = None, tokens=None):
    """An engine's take_state: small state written and the marker's figures taken at the boundary (`tokens`: the
    saver and the tokens trained); the returned write (waiting for `release` if given) adds the weights and seals it."""

    def take_state():
        staging = store.start(step)
        (staging / "trainer_state.json").write_text('{"step": %d}' % step)
        meta = tokens[0].marker_meta(tokens[1]) if tokens else {"step_meta": step}

        def write():
            if write_started is not None:
                write_started.set()
            if release is not None:
                assert release.wait(10)
            if fail is not None:
                raise fail
            (staging / "adapter_model.safetensors").write_bytes(b"w" * 1000)
            return store.commit(step, meta)

        return write

    return take_state


def test_each_marker_records_the_runs_totals_up_to_it(tmp_path):
    store = CheckpointStore(tmp_path)
    first = saver(store)
    first.save(2, taking(store, 2, tokens=(first, 100)))
    first.finish()
    totals = ckpt.Totals.recorded(first.last)
    assert totals.train_tokens == 100 and totals.checkpoints_saved == 1 and totals.train_time_s > 0

    resumed = saver(store, meta={"attempt": 2}, carried=totals)
    resumed.save(4, taking(store, 4, tokens=(resumed, 150)))
    resumed.finish()
    whole = ckpt.Totals.recorded(resumed.last)
    assert whole.train_tokens == 250 and whole.checkpoints_saved == 2 and whole.train_time_s > totals.train_time_s
    assert resumed.attempt(150).checkpoint_write_s > 0  # the write's own time, apart from the loop's
    assert ckpt.Totals.recorded(None) == ckpt.Totals()


def test_the_loop_goes_on_while_the_write_is_in_flight_and_the_next_save_waits_for_it(tmp_path):
    store = CheckpointStore(tmp_path)
    events = tmp_path / "events.jsonl"
    saving = saver(store, events=events)
    started, release = threading.Event(), threading.Event()
    saving.save(2, taking(store, 2, started, release))
    assert started.wait(10)  # the write runs while save() has returned to the loop
    assert saving.worker.busy and store.candidates() == [] and saving.last is None
    saving.check()  # nothing failed: the loop goes on

    second = threading.Thread(target=saving.save, args=(4, taking(store, 4)))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # at most one write in flight: the next save waits for the first
    release.set()
    second.join(10)
    saving.finish()
    assert [c.step for c in store.candidates()] == [4, 2] and all(ckpt.verify(c.path) is None for c in store.candidates())
    assert saving.last.step == 4
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(line["event"], line["step"], line["attempt"]) for line in lines] == [("checkpoint", 2, 1), ("checkpoint", 4, 1)]
    assert all(line["write_s"] > 0 and line["loop_blocked_s"] >= 0 for line in lines)


def test_a_failed_background_write_stops_the_loop_at_the_next_boundary_naming_the_newest_intact(tmp_path):
    store = CheckpointStore(tmp_path)
    saving = saver(store)
    saving.save(2, taking(store, 2))
    saving.finish()
    saving = saver(store)
    saving.save(4, taking(store, 4, fail=OSError(errno.ENOSPC, "No space left on device")))
    saving.worker._thread.join(10)
    with pytest.raises(CheckpointError) as raised:
        saving.check()
    message = str(raised.value)
    assert "the checkpoint of step 4" in message and "No space left on device" in message
    assert f"the newest intact checkpoint is {store.root / 'step-00000002'}" in message
    assert not store.staging_dir(4).exists() and [c.step for c in store.candidates()] == [2]
    saving.check()  # said once


def test_a_stop_signal_s_save_is_durable_before_save_returns_and_its_time_is_recorded(tmp_path):
    store = CheckpointStore(tmp_path)
    events = tmp_path / "events.jsonl"
    stop = StopFlag()
    stop.request("SIGTERM")
    saving = saver(store, stop=stop, events=events)
    saving.save(3, taking(store, 3))
    assert not saving.worker.busy and ckpt.verify(store.root / "step-00000003") is None
    stopped = [json.loads(line) for line in events.read_text().splitlines() if json.loads(line)["event"] == "stop"]
    assert len(stopped) == 1 and stopped[0]["signal"] == "SIGTERM" and stopped[0]["step"] == 3
    assert 0 < stopped[0]["signal_to_durable_s"] < 60


def test_the_storage_hook_runs_off_the_loop_after_the_rename(tmp_path):
    store = CheckpointStore(tmp_path)
    seen = []

    def hook(path):
        seen.append((threading.current_thread().name, ckpt.verify(path)))

    saving = saver(store, after_checkpoint=hook)
    saving.save(2, taking(store, 2))
    saving.finish()
    assert seen == [("lockstep-save-2", None)]


def test_recommitting_a_step_replaces_an_invalid_checkpoint_of_that_step(tmp_path):
    store = CheckpointStore(tmp_path)
    _truncate(save(store, 3) / "adapter_model.safetensors")
    path = save(store, 3, payload=b"again")
    assert ckpt.verify(path) is None
    assert (path / "adapter_model.safetensors").read_bytes() == b"again" * 100
    assert [p.name for p in store.root.iterdir()] == ["step-00000003"]


def test_retention_keeps_the_newest_valid_and_never_what_is_newer(tmp_path):
    store = CheckpointStore(tmp_path)
    for step in (1, 2, 3, 4):
        save(store, step)
    _truncate(save(store, 5) / "adapter_model.safetensors")  # newest, damaged
    removed = store.retain(keep_last=2)
    assert sorted(p.name for p in removed) == ["step-00000001", "step-00000002"]
    assert sorted(p.name for p in store.root.iterdir()) == ["step-00000003", "step-00000004", "step-00000005"]


def test_a_failing_commit_leaves_earlier_checkpoints_intact(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    first = save(store, 10)
    staging = store.start(20)
    (staging / "adapter_model.safetensors").write_bytes(b"x" * 1000)

    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ckpt, "_write_synced", lambda path, text: disk_full(path))
    with pytest.raises(OSError):
        store.commit(20, {})
    error = ckpt.save_failed(20, OSError(errno.ENOSPC, "No space left on device", "x"), store)
    assert "MiB free there" in str(error)
    assert "No space left on device" in str(error) and str(first) in str(error)
    assert error.exit_code == 6
    newest, rejected = store.newest_valid()
    assert newest.path == first and rejected == [] and ckpt.verify(first) is None


def test_policy_saves_every_percent_at_the_end_and_every_minutes():
    clock = [0.0]
    policy = Policy(every_percent=10, every_minutes=None, total_steps=144, clock=lambda: clock[0])
    assert [s for s in range(1, 145) if policy.due(s)] == [14, 28, 42, 56, 70, 84, 98, 112, 126, 140, 144]

    timed = Policy(every_percent=100, every_minutes=0.5, total_steps=1000, clock=lambda: clock[0])
    assert not timed.due(1)
    clock[0] = 31.0
    assert timed.due(2)
    timed.saved()
    assert not timed.due(3)
    assert timed.due(1000)


def test_policy_interval_is_at_least_one_step():
    policy = Policy(every_percent=1, every_minutes=None, total_steps=5)
    assert all(policy.due(s) for s in range(1, 6))


def test_storage_hook_is_retried_until_it_succeeds(tmp_path, capsys):
    calls = []

    def flaky(path):
        calls.append(path)
        if len(calls) < 3:
            raise ConnectionError("volume busy")

    call_storage_hook(flaky, tmp_path, attempts=3, delay_s=0)
    assert calls == [tmp_path] * 3
    assert capsys.readouterr().err.count("storage hook failed") == 2


def test_storage_hook_failure_is_raised_not_swallowed(tmp_path):
    def broken(path):
        raise PermissionError("read-only volume")

    with pytest.raises(CheckpointError, match=r"failed 3 times.*read-only volume") as info:
        call_storage_hook(broken, tmp_path, attempts=3, delay_s=0)
    assert info.value.exit_code == 6


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
