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
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [python, "-m", "runner", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def demo_tokenizer():
    from transformers import AutoTokenizer

    from runner.demo.tiny_model import ensure_built

    return AutoTokenizer.from_pretrained(ensure_built())
