"""Shared helpers: run the real `lockstep` command in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
LOCAL_BASE = "localhost/debian-base:bookworm"


def run_lockstep(*args: str, python: str = sys.executable, cwd: Path = REPO_ROOT, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "runner", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def start_lockstep(*args: str, stderr_to: Path, python: str = sys.executable) -> subprocess.Popen[bytes]:
    """Start `lockstep` without waiting, its stderr going to a file (a pipe could fill and block it)."""
    with stderr_to.open("wb") as stderr:
        return subprocess.Popen(
            [python, "-m", "runner", *args], cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr
        )


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT))


@pytest.fixture(scope="session")
def demo_tokenizer():
    from transformers import AutoTokenizer

    from runner.demo.tiny_model import ensure_built

    return AutoTokenizer.from_pretrained(ensure_built())


def copy_image_inputs(dest: Path) -> Path:
    """A copy of the files a stack's image is built from, to change without touching the repository."""
    for part in ("docker", "lockfiles", "runner"):
        shutil.copytree(REPO_ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", dest)
    return dest


@pytest.fixture(scope="session")
def container_env(tmp_path_factory):
    """os.environ for the container tools, with a base image; skips where no tool can run images."""
    from runner import containers
    from runner.errors import ImageError

    try:
        tool = containers.find("run")
    except ImageError as exc:
        _skip(f"no container tool: {exc}")
    conf = tmp_path_factory.mktemp("containers") / "containers.conf"
    # Inherit the host's rlimits: on hosts (like CI's) that forbid setting them, runc fails otherwise.
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = dict(os.environ, CONTAINERS_CONF=str(conf), PYTHONPATH=str(REPO_ROOT))
    env.setdefault("LOCKSTEP_BASE_IMAGE", LOCAL_BASE)
    if env["LOCKSTEP_BASE_IMAGE"] == LOCAL_BASE and tool.inspect(LOCAL_BASE) is None:
        if shutil.which("debootstrap") is None or os.geteuid() != 0:
            _skip("no base image: docker/debootstrap-base.sh needs root and debootstrap (apt-get install debootstrap)")
        subprocess.run(["sh", str(REPO_ROOT / "docker" / "debootstrap-base.sh"), LOCAL_BASE], check=True, capture_output=True)
    old = dict(os.environ)
    os.environ.update(env)  # the in-process calls below (images.spec, tool.inspect) see the same
    yield env
    os.environ.clear()
    os.environ.update(old)


def _skip(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)  # .ci/run installs the tools: in CI these tests must run, never silently skip
    pytest.skip(reason)
