"""Real image builds (podman/buildah, or docker) from the cpu stack's lock, and the demo run inside one.

The base image is made with debootstrap (docker/debootstrap-base.sh) when no registry is
reachable, as here; LOCKSTEP_BASE_IMAGE names another one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from runner import stacks
from runner.stacks import apptainer, containers, images, sif, sif_file
from runner.util.hashing import file_sha256
from tests.helpers import DEMO_CONFIG, REPO_ROOT, copy_image_inputs, run_lockstep
from tests.integration.run_checks import assert_complete_run

pytestmark = [pytest.mark.container, pytest.mark.slow]



@pytest.fixture(scope="module")
def built(container_env, tmp_path_factory):
    """`nox -s build -- cpu`, as a user runs it; returns what it built."""
    record = tmp_path_factory.mktemp("build") / "build.json"
    nox = Path(sys.executable).parent / "nox"
    result = subprocess.run([str(nox), "-s", "build", "--", "cpu", "--json", str(record)], cwd=REPO_ROOT,
                            env=container_env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    assert " GB)" in result.stdout + result.stderr  # the image size is reported
    return json.loads(record.read_text())[0]


def test_image_carries_the_stack_lock_and_commit(built):
    info = containers.find("run").inspect(built["tag"])
    stack = stacks.get("cpu")
    assert built["tag"] == images.spec(stack).tag  # same inputs, same tag
    assert info.labels["io.lockstep.stack"] == "cpu"
    assert info.labels["io.lockstep.lock-sha256"] == file_sha256(stack.lock_file)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    assert info.labels["org.opencontainers.image.revision"].removesuffix("-dirty") == head


@pytest.mark.extended  # ~3 min; `make test` trains in the image too, from its SIF, under Slurm (test_slurm.py)
def test_demo_in_the_container_matches_the_venv_run(built, container_env, tmp_path):
    in_container, in_venv = tmp_path / "container run", tmp_path / "venv run"  # a space in the path on purpose
    result = subprocess.run(
        [sys.executable, "-m", "runner", "train", str(DEMO_CONFIG), "--backend", "docker", "--set", f"output_dir={in_container}"],
        cwd=REPO_ROOT, env=container_env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    local = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={in_venv}")
    assert local.returncode == 0, local.stderr[-4000:]
    assert_complete_run(in_container, backend="docker")
    assert _tree(in_container) == _tree(in_venv)
    # Same lock, same code, same CPU: the same training, to the last bit of every logged loss.
    container_rows = [_without_speed(json.loads(line)) for line in (in_container / "metrics.jsonl").read_text().splitlines()]
    venv_rows = [_without_speed(json.loads(line)) for line in (in_venv / "metrics.jsonl").read_text().splitlines()]
    assert container_rows == venv_rows
    manifest = json.loads((in_container / "manifest.json").read_text())
    assert manifest["backend"] == "docker"
    assert manifest["image"] == {"ref": built["tag"], "id": built["id"]}
    assert manifest["stack"] == "cpu" and manifest["lock_sha256"] == file_sha256(stacks.get("cpu").lock_file)
    assert manifest["drift"]["clean"]
    assert os.stat(in_container / "summary.json").st_uid == os.getuid()  # the run stays the user's


def test_code_change_rebuilds_only_the_code_layers(built, container_env, tmp_path):
    copy = copy_image_inputs(tmp_path / "checkout")
    with (copy / "runner" / "__init__.py").open("a") as handle:
        handle.write(f"# a change to the code: {uuid.uuid4()}\n")  # a new image every time
    record = tmp_path / "build.json"
    env = dict(container_env, PYTHONPATH=str(copy), SOURCE_DATE_EPOCH=str(images.spec(stacks.get("cpu")).source_date_epoch))
    result = subprocess.run(
        [sys.executable, "-m", "runner.stacks.images", "build", "cpu", "--json", str(record), "--wheelhouse", str(REPO_ROOT / "wheelhouse" / "cpu")],
        cwd=copy, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rebuilt = json.loads(record.read_text())[0]
    subprocess.run([containers.find("build").name, "rmi", rebuilt["tag"]], capture_output=True)
    assert rebuilt["tag"] != built["tag"] and not rebuilt["reused"]
    if containers.find("build").name != "docker":  # buildah's log (docker's says CACHED instead)
        lines = result.stdout.splitlines()
        install = next(i for i, line in enumerate(lines) if "STEP" in line and "sh /opt/lockstep/stack/install-lock.sh" in line)
        assert lines[install + 1].startswith("--> Using cache"), lines[install:install + 3]  # the dependencies were not reinstalled
    deps = _dependency_layer_index(built)
    assert rebuilt["layers"][: deps + 1] == built["layers"][: deps + 1]
    assert rebuilt["layers"][-1] != built["layers"][-1]  # runner/ is the last layer


@pytest.mark.extended  # two from-scratch builds of the dependency layer: ~3.5 minutes, and it changes only with the Dockerfile
def test_dependency_layer_is_reproducible(built, container_env, tmp_path):
    """Two builds of the dependency layer from scratch (same lock, base and commit time) are the same bytes."""
    tool = containers.find("build")
    image = images.spec(stacks.get("cpu"))
    context = images.stage_context(image, tmp_path / "context", REPO_ROOT / "wheelhouse" / "cpu")
    layers = []
    for attempt in ("a", "b"):
        tag = f"lockstep-test/deps:{attempt}"
        argv = tool.build_argv(context=context, dockerfile=context / images.DOCKERFILE, tag=tag, target="deps",
                               build_args={**image.build_args(), "DEPS_BUILD_ID": f"reproducibility-{attempt}-{os.getpid()}"},
                               timestamp=image.source_date_epoch)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-4000:]
        layers.append(tool.inspect(tag).layers)
        subprocess.run([tool.name, "rmi", tag], capture_output=True)
    assert layers[0][-1] == layers[1][-1]
    assert layers[0] == layers[1]


def test_sif_archive_is_the_built_image(built, container_env, tmp_path):
    result = subprocess.run([sys.executable, "-m", "runner.stacks.apptainer", "cpu", "--out", str(tmp_path)],
                            cwd=REPO_ROOT, env=container_env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    sif_plan = apptainer.plan(built["tag"], containers.find("build").archive_scheme, tmp_path)
    assert sif_plan.script.read_text() == apptainer.script_text(sif_plan, built["tag"])
    assert "apptainer build --force lockstep-cpu-" in sif_plan.script.read_text()
    with tarfile.open(sif_plan.archive) as archive:
        index = json.load(archive.extractfile("index.json"))
        manifest = json.load(archive.extractfile(_blob(index["manifests"][0]["digest"])))
        config = json.load(archive.extractfile(_blob(manifest["config"]["digest"])))
        assert config["config"]["Labels"]["io.lockstep.stack"] == "cpu"
        assert config["config"]["Entrypoint"] == ["python", "-m", "runner.job"]
        assert ["sha256:" + file_sha256_of(archive, layer["digest"]) for layer in manifest["layers"]] == [
            layer["digest"] for layer in manifest["layers"]]
        assert config["rootfs"]["diff_ids"] == built["layers"]


def test_sif_built_without_apptainer_is_the_built_image(built, cpu_sif):
    """`nox -s sif` read the SIF back when it built it (partition, file list, code and site-packages); here what
    ties it to the image: its name, the partition digest beside it, the lock in its labels (test_slurm runs it)."""
    assert cpu_sif.name == sif.out_name(built["tag"])
    image = sif_file.read(cpu_sif)
    partition = image.primary_system()
    assert (cpu_sif.parent / (cpu_sif.name + sif.DIGEST_SUFFIX)).read_text().strip() == image.sha256(partition)
    labels = json.loads(image.read(next(d for d in image.descriptors if d.data_type == "labels")))
    assert labels == containers.find("run").inspect(built["tag"]).labels
    assert labels["io.lockstep.lock-sha256"] == file_sha256(stacks.get("cpu").lock_file)


def _blob(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def file_sha256_of(archive: tarfile.TarFile, digest: str) -> str:
    import hashlib

    sha = hashlib.sha256()
    handle = archive.extractfile(_blob(digest))
    for block in iter(lambda: handle.read(1 << 20), b""):
        sha.update(block)
    return sha.hexdigest()


def _dependency_layer_index(built: dict) -> int:
    """The image's layers: base, install-python.sh, Python, lock, dependencies, lockfiles, pyproject, runner."""
    assert len(built["layers"]) == 8, built["layers"]
    return 4


def _tree(run_dir: Path) -> list[str]:
    return sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file() and "plots" not in p.parts) + sorted(
        p.name for p in (run_dir / "plots").iterdir())


def _without_speed(row: dict) -> dict:
    """A metrics row without what depends on when and how fast it ran (speed, memory, the time it was written)."""
    return {key: value for key, value in row.items() if key not in ("tokens_per_s", "memory_mb", "time")}
