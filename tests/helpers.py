"""What the tests share besides fixtures (those are in conftest.py, beside this file): the repository's paths, the
real `lockstep` command run in a subprocess, projects with hostile paths, and the one rule for a missing tool (fail in
CI, else skip).

Test modules import these from here, never from conftest.py: pytest loads that file as the plugin of its directory,
and importing it like a module depends on the import mode it was found under."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
MLX_CONFIG = REPO_ROOT / "configs" / "demo-mlx.yaml"
GOLDEN_DIR = REPO_ROOT / "tests" / "golden"
LOCAL_BASE = "localhost/debian-base:bookworm"

# The demo cut short for multi-process comparisons: deterministic, 24 steps, a checkpoint every 6.
TWO_PROCESS_ARGS = ("--set", "train.max_steps=24", "--set", "checkpoint.every_percent=25", "--set", "train.deterministic=true",
                    "--set", "resources.processes_per_node=2", "--set", "resources.cpus_per_process=1")
# Threads per process change float reduction order: every run compared with the reference uses one.
TWO_PROCESS_ENV = {"OMP_NUM_THREADS": "1"}


def lockstep_env() -> dict[str, str]:
    """os.environ with this checkout first on PYTHONPATH, so a `python -m runner` child runs this copy of lockstep."""
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT))


def run_lockstep(*args: str, python: str = sys.executable, cwd: Path = REPO_ROOT, timeout: int = 600,
                 extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-m", "runner", *args], cwd=cwd, env=lockstep_env() | (extra_env or {}),
                          capture_output=True, text=True, timeout=timeout)


def start_lockstep(*args: str, stderr_to: Path, python: str = sys.executable,
                   extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `lockstep` without waiting, its stderr going to a file (a pipe could fill and block it)."""
    with stderr_to.open("wb") as stderr:
        return subprocess.Popen([python, "-m", "runner", *args], cwd=REPO_ROOT, env=lockstep_env() | (extra_env or {}),
                                stdout=subprocess.DEVNULL, stderr=stderr)


def hostile_project(tmp_path: Path, directory: str, output: str) -> Path:
    """A project whose paths have spaces, quotes, `$` and `;` (`directory` may add more), with its data
    outside the working directory; returns the config file."""
    cwd, data = tmp_path / directory, tmp_path / "data $shared"
    cwd.mkdir()
    data.mkdir()
    (data / "train.jsonl").write_text('{"text": "hello"}\n')
    config_path = cwd / "run.yaml"
    config_path.write_text(f"model: {{name_or_path: 'builtin:tiny-llama'}}\ndata: {{train: '{data / 'train.jsonl'}', format: text}}\n"
                           f"output_dir: '{output}'\n")
    return config_path


def nothing_but_preflight(run_dir: Path) -> bool:
    """The run directory holds preflight's report (and the lock the refused command held) and nothing else: no training started."""
    from runner.rundir import LOCK_FILE

    return sorted(path.name for path in run_dir.iterdir() if path.name != LOCK_FILE) == ["preflight_report.json", "recommended_config.yaml"]


def copy_image_inputs(dest: Path) -> Path:
    """A copy of the files a stack's image is built from, to change without touching the repository."""
    for part in ("docker", "lockfiles", "runner"):
        shutil.copytree(REPO_ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", dest)
    return dest


def skip_or_fail(reason: str) -> NoReturn:
    """Skip a test whose tool or environment is missing here; in CI (CI set) a missing tool fails, it never silently
    skips: .ci/run installs the tools, so a test that cannot run there is a broken CI, not a test to pass over."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
