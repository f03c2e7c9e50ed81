"""One writer per run directory, between real processes: refused with the holder's name, inherited by the
processes a holder starts, never blocked by a dead holder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runner import run_lock
from runner.errors import RunInUse
from tests.helpers import REPO_ROOT

# A process that takes the lock, says so, and keeps it (optionally starting a child that takes it too).
HOLD = """
import subprocess, sys, time
from pathlib import Path
from runner import run_lock
run_lock.acquire(Path(sys.argv[1]))
print("held", flush=True)
if len(sys.argv) > 2:
    child = subprocess.run([sys.executable, "-c", sys.argv[2], sys.argv[1]], capture_output=True, text=True)
    print(f"child {child.returncode} {child.stdout.strip()} {child.stderr.strip()[-300:]}", flush=True)
time.sleep(60)
"""
TAKE = """
import sys
from pathlib import Path
from runner import run_lock
from runner.errors import RunInUse
try:
    run_lock.acquire(Path(sys.argv[1]))
except RunInUse as exc:
    print(exc)
    sys.exit(exc.exit_code)
print("took it")
"""


def start_holder(run_dir: Path, *child: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), *child], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                               env=_env(env))
    assert process.stdout.readline().strip() == "held"
    return process


def take(run_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", TAKE, str(run_dir)], cwd=REPO_ROOT, capture_output=True, text=True, env=_env(env),
                          timeout=60)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != run_lock.TOKEN_ENV}
    return env | {"PYTHONPATH": str(REPO_ROOT)} | (extra or {})


@pytest.fixture
def holder(tmp_path):
    process = start_holder(tmp_path / "run")
    yield process
    process.kill()
    process.wait()


def test_a_second_writer_is_refused_with_the_holders_name(tmp_path, holder):
    result = take(tmp_path / "run")
    assert result.returncode == RunInUse.exit_code == 14, result.stdout + result.stderr
    assert f"pid {holder.pid} on {socket.gethostname()}" in result.stdout and "is in use" in result.stdout
    assert "nothing was changed" in result.stdout and f"kill {holder.pid}" in result.stdout
    with pytest.raises(RunInUse):
        run_lock.acquire(tmp_path / "run")


def test_a_dead_holder_never_blocks(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert take(tmp_path / "run").stdout.strip() == "took it"


def test_a_process_started_by_the_holder_inherits_the_lock_and_a_stranger_does_not(tmp_path):
    holder = start_holder(tmp_path / "run", TAKE)
    try:
        assert holder.stdout.readline().startswith("child 0 took it")
        assert take(tmp_path / "run").returncode == 14  # without the holder's token
    finally:
        holder.kill()
        holder.wait()


def test_an_inheriting_child_takes_the_lock_over_when_its_parent_dies(tmp_path):
    run_dir = tmp_path / "run"
    parent = start_holder(run_dir)
    token = (run_dir / ".lockstep.lock").read_text().split('"token": "')[1].split('"')[0]
    child = start_holder(run_dir, env={run_lock.TOKEN_ENV: token})  # as a job started by the holder would
    try:
        parent.kill()
        parent.wait()
        deadline = 50
        while deadline and f'"pid": {child.pid}' not in (run_dir / ".lockstep.lock").read_text():
            deadline -= 1
            subprocess.run(["sleep", "0.1"], check=True)
        refused = take(run_dir)
        assert refused.returncode == 14 and f"pid {child.pid}" in refused.stdout, refused.stdout
    finally:
        child.kill()
        child.wait()


def test_holding_twice_in_one_process_is_one_lock(tmp_path):
    run_dir = tmp_path / "run"
    with run_lock.hold(run_dir):
        with run_lock.hold(run_dir):
            pass
        assert take(run_dir).returncode == 14  # still held by the outer block
    assert take(run_dir).stdout.strip() == "took it"
    assert run_lock.TOKEN_ENV not in os.environ
