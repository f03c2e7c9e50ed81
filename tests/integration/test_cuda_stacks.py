"""The CUDA stacks locked, collected and installed for real against a copy of PyTorch's index on 127.0.0.1.

PyTorch's index cannot be reached from CI, so tests/pytorch_index.py serves a faithful copy of it
(its pages, file names and tags, no upload times, stub wheels with the real Requires-Dist). Only
that copy stands in: everything else is the real PyPI, uv, pip and a fresh virtual environment.
The real stacks.toml is not edited; LOCKSTEP_INDEX_MIRRORS points PyTorch's address at the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from runner import stacks
from runner.errors import StackError
from runner.stacks import indexes, install
from tests import pytorch_index
from tests.helpers import skip_or_fail

pytestmark = pytest.mark.slow

VARIANTS = {"cu121-torch251": "cu121", "hpc-cu118": "cu118"}
PYPI = "https://pypi.org/simple"
LIBRARIES = ("transformers", "trl", "peft", "accelerate", "datasets")  # the pinned set both CUDA stacks share with -pypi


@pytest.fixture(scope="module")
def copy_of_pytorch(tmp_path_factory):
    root = tmp_path_factory.mktemp("download.pytorch.org")
    digests = pytorch_index.write(root)
    with pytorch_index.serve(root) as served:
        yield root, served, digests


@pytest.fixture(scope="module")
def mirrored_env(copy_of_pytorch):
    _, served, _ = copy_of_pytorch
    return dict(os.environ, LOCKSTEP_INDEX_MIRRORS=f"https://download.pytorch.org/whl={served.url}")


@pytest.fixture(scope="module")
def locked(tmp_path_factory, mirrored_env):
    """A copy of lockfiles/ with both CUDA stacks locked against the copy of PyTorch's index."""
    root = tmp_path_factory.mktemp("locked") / "lockfiles"
    shutil.copytree(stacks.LOCKFILES, root)
    result = _lock(root, mirrored_env, *VARIANTS)
    assert result.returncode == 0, result.stderr
    return root


def _lock(root: Path, env: dict[str, str], *names: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "runner.stacks.locking", "--lockfiles", str(root), *names]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def _pypi_sha256(name: str, version: str) -> set[str]:
    """The sha256 of every file PyPI has for that release (its JSON simple API)."""
    request = urllib.request.Request(f"{PYPI}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    return {f["hashes"]["sha256"] for f in files if _release_of(f["filename"], name) == version}


def _release_of(filename: str, name: str) -> str | None:
    from packaging.utils import parse_sdist_filename, parse_wheel_filename

    try:
        parsed = parse_wheel_filename(filename) if filename.endswith(".whl") else parse_sdist_filename(filename)
    except ValueError:
        return None
    return str(parsed[1]) if stacks.normalize(parsed[0]) == name else None


def test_both_cuda_stacks_lock_pytorchs_builds_from_its_index_and_the_rest_from_pypi(locked, copy_of_pytorch, mirrored_env):
    _, served, digests = copy_of_pytorch
    assert any(path.startswith("/whl/cu121/torch/") for path in served.requests)  # the copy was what uv read
    stubs = set(digests.values())
    for name, variant in VARIANTS.items():
        text = (locked / f"{name}.txt").read_text()
        entries = stacks.entries(text)
        assert stacks.get(name, locked).lock_problem() is None
        assert all(stacks.HASH.search(entry) for entry in entries.values()), f"{name}: an entry without a hash"
        # torch (and torchvision) are PyTorch's +cuXXX builds, hashed with the sha256 its index lists
        assert stacks.pins(text)["torch"] == [f"2.5.1+{variant}"]
        assert stacks.HASH.findall(entries["torch"]) == [digests[f"torch-2.5.1+{variant}-cp311-cp311-linux_x86_64.whl"]]
        if variant == "cu121":
            assert stacks.HASH.findall(entries["torchvision"]) == [digests["torchvision-0.20.1+cu121-cp311-cp311-linux_x86_64.whl"]]
        # every other package is PyPI's release under its hashes, none of the copies PyTorch's index also serves
        others = {n: e for n, e in entries.items() if n not in pytorch_index.PYTORCH_PROJECTS}
        with ThreadPoolExecutor(16) as pool:
            pypi = dict(zip(others, pool.map(lambda n: _pypi_sha256(n, stacks.pins(others[n])[n][0]), others)))
        for package, entry in others.items():
            hashes = set(stacks.HASH.findall(entry))
            assert hashes <= pypi[package] and not hashes & stubs, f"{name}: {package} is not PyPI's release"
        twin = stacks.pins(stacks.get("cu121-torch251-pypi").lock_file.read_text())
        assert {lib: stacks.pins(text)[lib] for lib in LIBRARIES} == {lib: twin[lib] for lib in LIBRARIES}
        assert f"only from https://download.pytorch.org/whl/{variant}," in text  # the waived cut-off, said in the header
    assert "127.0.0.1" not in (locked / "cu121-torch251.txt").read_text()  # the lock names the real index, not the copy

    first = {name: (locked / f"{name}.txt").read_bytes() for name in VARIANTS}
    again = _lock(locked, mirrored_env, *VARIANTS)
    assert again.returncode == 0, again.stderr
    assert {name: (locked / f"{name}.txt").read_bytes() for name in VARIANTS} == first


# Gigabytes of wheels per stack, the same code path as tests/integration/test_wheelhouse.py's (which `make test` runs on the
# cpu lock): both CUDA stacks with `nox -s extended`.
@pytest.mark.extended
@pytest.mark.parametrize("name", VARIANTS)
def test_the_wheelhouse_collects_the_lock_and_installs_it_with_no_index(name, locked, mirrored_env, tmp_path):
    wheels = tmp_path / "wheels"
    collect = [sys.executable, "-m", "runner.stacks.wheelhouse", "--lockfiles", str(locked), name, "--dest", str(wheels)]
    result = subprocess.run(collect, env=mirrored_env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lock_text = (locked / f"{name}.txt").read_text()
    assert len(list(wheels.iterdir())) == len(stacks.pins(lock_text))  # one file per locked package, the stubs among them

    venv = tmp_path / "venv"
    setup = [sys.executable, "-m", "runner.stacks.install", "--lockfiles", str(locked), "--wheelhouse", str(wheels), name, str(venv)]
    result = subprocess.run(setup, env=mirrored_env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]  # install ends with pip check: clean
    installed = _installed(venv)
    assert installed["torch"] == f"2.5.1+{VARIANTS[name]}"
    assert {package: installed[package] for package in stacks.pins(lock_text)} == {
        package: versions[0] for package, versions in stacks.pins(lock_text).items()}
    assert json.loads((venv / install.STACK_MARKER).read_text())["stack"] == name
    for bulky in (wheels, venv):  # gigabytes of CUDA libraries: kept only when an assertion above failed
        shutil.rmtree(bulky)


def _installed(venv: Path) -> dict[str, str]:
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    return {stacks.normalize(item["name"]): item["version"] for item in json.loads(listed)}


def test_an_index_that_now_serves_other_bytes_for_torch_is_refused_and_nothing_installed(tmp_path, locked, mirrored_env):
    rebuilt = tmp_path / "rebuilt"  # the same index after a rebuild of its files: same names, other bytes
    pytorch_index.write(rebuilt, {"cu121": pytorch_index.VARIANTS["cu121"]}, marker="# rebuilt\n")
    venv = tmp_path / "venv"
    with pytorch_index.serve(rebuilt) as served:
        env = dict(mirrored_env, LOCKSTEP_INDEX_MIRRORS=f"https://download.pytorch.org/whl={served.url}")
        setup = [sys.executable, "-m", "runner.stacks.install", "--lockfiles", str(locked), "cu121-torch251", str(venv)]
        result = subprocess.run(setup, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == StackError.exit_code, result.stderr[-3000:]
    assert "refused to install stack cu121-torch251" in result.stderr and "nothing from the lock was installed" in result.stderr
    assert "Traceback" not in result.stderr
    assert set(_installed(venv)) <= {"pip", "setuptools"}
    assert not (venv / install.STACK_MARKER).exists()


def test_an_unreachable_index_without_a_fallback_names_it_and_both_ways_out(tmp_path, locked):
    before = (locked / "cu121-torch251.txt").read_bytes()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull,  # no configured wheel folder to fall back on
               LOCKSTEP_INDEX_MIRRORS="https://download.pytorch.org/whl=http://127.0.0.1:9/whl")  # the discard port: refused
    result = _lock(locked, env, "cu121-torch251")
    assert result.returncode == StackError.exit_code
    message = result.stderr
    assert "the index https://download.pytorch.org/whl/cu121, the only source of torch" in message
    assert "cannot be reached from here" in message and "Two ways out" in message and "--find-links DIR" in message
    assert ".github/workflows/lock-cuda-stacks.yml" in message and "Traceback" not in message
    assert (locked / "cu121-torch251.txt").read_bytes() == before


def test_the_committed_cpu_lock_relocks_byte_identical_from_a_copy_of_the_cpu_index(tmp_path, copy_of_pytorch):
    """The cpu stack's torch through PyTorch's index (not the wheel-folder fallback): the same lock, byte for byte."""
    root, _, _ = copy_of_pytorch
    pin = stacks.pins(stacks.get("cpu").lock_file.read_text())["torch"][0]
    found = [p for d in indexes.pip_find_links() for p in Path(d).glob(f"torch-{pin}-cp311-*.whl")]
    if not found:
        skip_or_fail(f"no torch-{pin} wheel in pip's find-links folders to serve as PyTorch's cpu index would")
    pytorch_index.add_real_wheel(root, "cpu", found[0])
    lockfiles = tmp_path / "lockfiles"
    shutil.copytree(stacks.LOCKFILES, lockfiles)
    (lockfiles / "cpu.txt").unlink()
    _, served, _ = copy_of_pytorch
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, LOCKSTEP_INDEX_MIRRORS=f"https://download.pytorch.org/whl={served.url}")
    result = _lock(lockfiles, env, "cpu")
    assert result.returncode == 0, result.stderr
    assert "cannot be reached" not in result.stderr  # the index itself, not the fallback
    assert (lockfiles / "cpu.txt").read_bytes() == stacks.get("cpu").lock_file.read_bytes()
