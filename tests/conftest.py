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


def run_lockstep(*args: str, python: str = sys.executable, cwd: Path = REPO_ROOT, timeout: int = 600,
                 extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "runner", *args], cwd=cwd, env=_env() | (extra_env or {}), capture_output=True, text=True, timeout=timeout
    )


def start_lockstep(*args: str, stderr_to: Path, python: str = sys.executable, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `lockstep` without waiting, its stderr going to a file (a pipe could fill and block it)."""
    with stderr_to.open("wb") as stderr:
        return subprocess.Popen(
            [python, "-m", "runner", *args], cwd=REPO_ROOT, env=_env() | (extra_env or {}), stdout=subprocess.DEVNULL, stderr=stderr
        )


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


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT))


@pytest.fixture
def tmpfs(tmp_path):
    """A factory of small tmpfs mounts (`tmpfs("2500k")`), unmounted after the test: a real full disk
    (mounting needs root, as in CI; elsewhere the test skips, and test_injected_write_failure covers the path)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"tmpfs-{len(mounted)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True, text=True)
        if result.returncode != 0:
            _skip(f"cannot mount a small tmpfs here ({result.stderr.strip()})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


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
    settings = "[containers]\ndefault_ulimits = []\n"
    if shutil.which("runc"):
        # crun (podman's default) refuses hosts with cgroups v1 and v2 mounted side by side ("hybrid mode"); runc runs there.
        settings += '[engine]\nruntime = "runc"\n'
    conf.write_text(settings)
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


@pytest.fixture(scope="session")
def pinned_python() -> str:
    """The Python of the environment with the library set pinned for Modal (no experiment trackers in it)."""
    python = os.environ.get("LOCKSTEP_PINNED_PYTHON")
    if python and os.path.exists(python):
        return python
    _skip("no pinned-generation environment: run `make test` (it builds .venv-pinned and sets LOCKSTEP_PINNED_PYTHON)")


# The demo cut short for multi-process comparisons: deterministic, 24 steps, a checkpoint every 6.
TWO_PROCESS_ARGS = ("--set", "train.max_steps=24", "--set", "checkpoint.every_percent=25", "--set", "train.deterministic=true",
                    "--set", "resources.processes_per_node=2", "--set", "resources.cpus_per_process=1")
# Threads per process change float reduction order: every run compared with the reference uses one.
TWO_PROCESS_ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def two_process_reference(tmp_path_factory) -> Path:
    """An uninterrupted local run of the demo as two processes (the node launcher and torchrun, DDP over gloo)."""
    run_dir = tmp_path_factory.mktemp("two-process") / "reference"
    result = subprocess.run([sys.executable, "-m", "runner", "train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", *TWO_PROCESS_ARGS],
                            cwd=REPO_ROOT, env=_env() | TWO_PROCESS_ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real one-node Slurm cluster (tests/slurm_cluster.py), stopped after the tests."""
    from tests import slurm_cluster

    why = slurm_cluster.missing()
    if why:
        _skip(f"no Slurm cluster: {why}")
    cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()
