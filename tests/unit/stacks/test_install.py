"""`python -m runner.stacks.install` for real: an environment that `pip check` finds broken is an error, not a success."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from runner import stacks
from runner.errors import StackError
from runner.stacks import install
from runner.util.hashing import file_sha256

REQUESTS = "2.34.2"  # the release the committed locks pin; pip fetches it from its configured sources or PyPI
STACKS_TOML = """\
[stacks.tiny]
description = "requests without the packages it requires: hashes and header right, a lock only pip check faults"
python = "3.11"
platforms = ["x86_64-manylinux_2_28"]
index_url = "https://pypi.org/simple"
resolved_before = "2026-11-23T00:00:00Z"
requirements = "tiny.in"
base_image = "docker.io/library/python:3.11-slim-bookworm"
accelerator = "cpu"
engine = "hf"
"""


def test_an_environment_pip_check_finds_incomplete_is_refused_with_its_broken_requirements(tmp_path):
    wheels = tmp_path / "wheels"
    download = [sys.executable, "-m", "pip", "download", f"requests=={REQUESTS}", "--no-deps", "--only-binary=:all:",
                "--quiet", "-d", str(wheels)]
    subprocess.run(download, check=True, timeout=300)  # where pip reaches no source of it, the test fails, as it should
    (wheel,) = wheels.glob("requests-*.whl")
    root = tmp_path / "lockfiles"
    root.mkdir()
    (root / "stacks.toml").write_text(STACKS_TOML)
    (root / "tiny.in").write_text("requests\n")
    body = f"requests=={REQUESTS} \\\n    --hash=sha256:{file_sha256(wheel)}\n    # via -r tiny.in\n"
    input_sha256, body_sha256 = file_sha256(root / "tiny.in"), hashlib.sha256(body.encode()).hexdigest()
    (root / "tiny.txt").write_text(f"# input sha256: {input_sha256}\n# body sha256: {body_sha256}\n{body}")
    stack = stacks.get("tiny", root)
    assert stack.lock_problem() is None  # the lock is intact: only pip check can tell what it lacks
    venv = tmp_path / "venv"
    with pytest.raises(StackError) as info:
        install.install(stack, venv)
    message = str(info.value)
    assert info.value.exit_code == 8
    assert f"requests {REQUESTS} requires idna, which is not installed." in message  # pip check's own line
    assert f"the environment at {venv} is incomplete" in message and "`nox -s lock -- tiny`" in message
    assert (venv / "bin" / "python").exists()
    assert not (venv / install.STACK_MARKER).exists()  # the marker means complete: this environment has none
