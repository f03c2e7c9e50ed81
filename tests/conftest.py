"""Shared helpers: run the real `lockstep` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


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
