"""`nox -s wheelhouse`: the lock's wheels, hash-verified, enough to install the stack with no index."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from runner import stacks
from runner.stacks import wheelhouse
from runner.util.hashing import file_sha256

pytestmark = pytest.mark.slow


def test_wheelhouse_installs_the_lock_with_no_index(tmp_path):
    stack = stacks.get("cpu")
    dest = tmp_path / "wheels"
    dest.mkdir()
    (dest / "stale-0.1-py3-none-any.whl").write_bytes(b"from an older lock")
    wheelhouse.fill(stack, dest)

    files = sorted(dest.iterdir())
    assert "stale-0.1-py3-none-any.whl" not in {path.name for path in files}
    locked = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", stack.lock_file.read_text()))
    assert all(file_sha256(path) in locked for path in files)
    assert len(files) == len(stacks.pins(stack.lock_file.read_text()))  # one wheel per locked package

    # pip with no configuration at all (no configured wheel directory or index): the wheelhouse alone.
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
         "--no-index", "--find-links", str(dest), "--require-hashes", "--no-deps", "-r", str(stack.lock_file)],
        env=dict(os.environ, PIP_CONFIG_FILE=os.devnull), capture_output=True, text=True, timeout=600,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    installed = {item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(report.stdout)["install"]}
    assert installed == set(stacks.pins(stack.lock_file.read_text()))
