"""The tests' fixtures; the plain helpers they share are in tests/helpers.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import (
    DEMO_CONFIG,
    GOLDEN_DIR,
    LOCAL_BASE,
    REPO_ROOT,
    TWO_PROCESS_ARGS,
    TWO_PROCESS_ENV,
    lockstep_env,
    skip_or_fail,
)


@pytest.fixture(scope="session")
def demo_tokenizer():
    from transformers import AutoTokenizer

    from runner.demo.tiny_model import ensure_built

    return AutoTokenizer.from_pretrained(ensure_built())


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The demo trained once through the real `lockstep train` (its run directory, and the finished process),
    shared by the tests that read a finished run and leave it as it is."""
    from tests.helpers import run_lockstep

    run_dir = tmp_path_factory.mktemp("demo") / "run with space"
    result = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


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
            skip_or_fail(f"cannot mount a small tmpfs here ({result.stderr.strip()})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture(scope="session")
def container_env(tmp_path_factory):
    """os.environ for the container tools, with a base image; skips where no tool can run images."""
    from runner.errors import ImageError
    from runner.stacks import containers

    try:
        tool = containers.find("run")
    except ImageError as exc:
        skip_or_fail(f"no container tool: {exc}")
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
            skip_or_fail("no base image: docker/debootstrap-base.sh needs root and debootstrap (apt-get install debootstrap)")
        subprocess.run(["sh", str(REPO_ROOT / "docker" / "debootstrap-base.sh"), LOCAL_BASE], check=True, capture_output=True)
    old = dict(os.environ)
    os.environ.update(env)  # the in-process calls below (images.spec, tool.inspect) see the same
    yield env
    os.environ.clear()
    os.environ.update(old)


@pytest.fixture(scope="session")
def pinned_python() -> str:
    """The Python of the environment with the library set pinned for Modal (no experiment trackers in it)."""
    python = os.environ.get("LOCKSTEP_PINNED_PYTHON")
    if python and os.path.exists(python):
        return python
    skip_or_fail("no pinned-generation environment: run `make test` (it builds .venv-pinned and sets LOCKSTEP_PINNED_PYTHON)")


@pytest.fixture(scope="session")
def two_process_reference(tmp_path_factory) -> Path:
    """An uninterrupted local run of the demo as two processes (the node launcher and torchrun, DDP over gloo)."""
    run_dir = tmp_path_factory.mktemp("two-process") / "reference"
    result = subprocess.run([sys.executable, "-m", "runner", "train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", *TWO_PROCESS_ARGS],
                            cwd=REPO_ROOT, env=lockstep_env() | TWO_PROCESS_ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real one-node Slurm cluster (tests/slurm_cluster.py), stopped after the tests."""
    from tests import slurm_cluster

    why = slurm_cluster.missing()
    if why:
        skip_or_fail(f"no Slurm cluster: {why}")
    cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


@pytest.fixture
def golden(request):
    """`golden("docker-run.txt", text)`: `text` must equal tests/golden/docker-run.txt, an exact output kept in the
    repository so that any change to it shows in review. With LOCKSTEP_REGEN_GOLDEN=1 the file is rewritten instead,
    after an intended change; the failure names that command for the calling test file. The test normalises what
    differs from run to run (tmp paths as `{tmp}`) before the call."""
    test_file = os.path.relpath(request.path, REPO_ROOT)

    def check(name: str, text: str) -> None:
        path = GOLDEN_DIR / name
        if os.environ.get("LOCKSTEP_REGEN_GOLDEN"):
            path.write_text(text)
        expected = path.read_text() if path.exists() else None
        assert text == expected, (f"{path.relative_to(REPO_ROOT)} changed; if intended, regenerate it: "
                                  f"LOCKSTEP_REGEN_GOLDEN=1 pytest {test_file}")

    return check


@pytest.fixture(scope="session")
def cpu_sif(container_env, tmp_path_factory) -> Path:
    """The cpu stack's SIF, built here without Apptainer (`nox -s sif -- cpu --builder siftool`)."""
    missing = [tool for tool in ("siftool", "mksquashfs", "unsquashfs", "ch-run") if shutil.which(tool) is None]
    if missing:
        skip_or_fail(f"{', '.join(missing)} not installed (apt-get install siftool squashfs-tools charliecloud-runtime squashfuse)")
    out = tmp_path_factory.mktemp("sif")
    result = subprocess.run([sys.executable, "-m", "runner.stacks.sif", "cpu", "--builder", "siftool", "--out", str(out)],
                            cwd=REPO_ROOT, env=container_env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    (image,) = out.glob("*.sif")
    return image
