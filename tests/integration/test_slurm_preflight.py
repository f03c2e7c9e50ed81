"""`lockstep train --backend slurm` in Apptainer or charliecloud refuses, before submitting anything, a job
that could not run: a runtime this machine lacks (unless declared on the nodes), no SIF, a SIF built from another
lock of the stack, a bind whose source does not exist."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from runner import stacks
from runner.stacks import containers, sif
from runner.util.hashing import file_sha256
from tests.helpers import DEMO_CONFIG, nothing_but_preflight, run_lockstep, skip_or_fail

LIMITS_EXIT = 10  # what the backend cannot run: refused before submitting, like a platform limit


RUNTIMES = pytest.mark.parametrize("runtime", ["apptainer", "charliecloud"])


def _train(run_dir, *settings: str, runtime: str = "charliecloud", options: tuple[str, ...] = (), path: str | None = None):
    return run_lockstep("train", str(DEMO_CONFIG), "--backend", "slurm", "--set", f"output_dir={run_dir}", *options,
                        "--set", f"slurm.container={runtime}", *(arg for item in settings for arg in ("--set", item)),
                        extra_env={"PATH": path} if path else None)


def _path_without(tmp_path, *commands: str) -> str:
    """A PATH with every command of this one but `commands`: a directory of links to them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for tool in Path(directory).glob("*") if Path(directory).is_dir() else ():
            link = bin_dir / tool.name
            if tool.name not in commands and not link.exists() and os.access(tool, os.X_OK):
                link.symlink_to(tool.resolve())
    return str(bin_dir)


def _sif_with_lock(tmp_path, lock_sha256: str):
    if shutil.which("siftool") is None or shutil.which("mksquashfs") is None:
        skip_or_fail("siftool and mksquashfs not installed (apt-get install siftool squashfs-tools)")
    rootfs = tmp_path / "rootfs"
    (rootfs / "opt" / "lockstep").mkdir(parents=True)
    info = containers.ImageInfo(id="sha256:" + "0" * 64, size=None, labels={"io.lockstep.stack": "cpu",
                                "io.lockstep.lock-sha256": lock_sha256}, layers=())
    target = tmp_path / "image.sif"
    sif.write_sif(rootfs, target, tag="lockstep/cpu:0", info=info, epoch=1700000000)
    return target


@RUNTIMES
def test_a_missing_sif_is_refused_with_the_command_that_builds_it(tmp_path, runtime):
    result = _train(tmp_path / "run", f"slurm.image={tmp_path / 'absent.sif'}", runtime=runtime)
    assert result.returncode == LIMITS_EXIT, result.stderr[-3000:]
    assert f"no SIF at {tmp_path / 'absent.sif'}" in result.stderr and "nox -s sif -- cpu" in result.stderr
    assert "Traceback" not in result.stderr and nothing_but_preflight(tmp_path / "run")


@RUNTIMES
def test_a_sif_built_from_another_lock_is_refused(tmp_path, runtime):
    image = _sif_with_lock(tmp_path, "f" * 64)
    result = _train(tmp_path / "run", f"slurm.image={image}", runtime=runtime)
    assert result.returncode == LIMITS_EXIT, result.stderr[-3000:]
    assert f"{image} was built from another lock of stack cpu" in result.stderr and "rebuild it from the current lock" in result.stderr
    assert nothing_but_preflight(tmp_path / "run")


@pytest.mark.parametrize("bind", ["/nonexistent/lockstep data", "/nonexistent/src:/data"])
def test_a_bind_whose_source_does_not_exist_is_refused(tmp_path, bind):
    image = _sif_with_lock(tmp_path, file_sha256(stacks.get("cpu").lock_file))
    result = _train(tmp_path / "run", f"slurm.image={image}", f"slurm.binds=['{bind}']")
    assert result.returncode == LIMITS_EXIT, result.stderr[-3000:]
    assert f"slurm.binds: '{bind.split(':')[0]}' does not exist on this machine" in result.stderr
    assert "no SIF" not in result.stderr and "another lock" not in result.stderr  # the SIF itself is fine
    assert nothing_but_preflight(tmp_path / "run")


COMMANDS = {"apptainer": "apptainer", "charliecloud": "ch-run"}


@RUNTIMES
def test_a_runtime_this_machine_lacks_is_refused_unless_declared_on_the_nodes(tmp_path, runtime):
    image = _sif_with_lock(tmp_path, file_sha256(stacks.get("cpu").lock_file))
    path = _path_without(tmp_path, COMMANDS[runtime])
    refused = _train(tmp_path / "run", f"slurm.image={image}", runtime=runtime, path=path)
    assert refused.returncode == LIMITS_EXIT, refused.stderr[-3000:]
    assert f"slurm.container is {runtime}, but {COMMANDS[runtime]} is not on this machine's PATH" in refused.stderr
    assert "slurm.container_on_nodes: true" in refused.stderr and nothing_but_preflight(tmp_path / "run")
    declared = _train(tmp_path / "declared", f"slurm.image={image}", "slurm.container_on_nodes=true", runtime=runtime,
                      options=("--dry-run",), path=path)
    assert declared.returncode == 0, declared.stderr[-3000:]
    step = next(line for line in declared.stdout.splitlines() if line.startswith("srun "))
    assert f" {COMMANDS[runtime]} " in step and "not on this machine's PATH" not in declared.stderr


def test_charliecloud_needs_unsquashfs_where_it_submits(tmp_path):
    image = _sif_with_lock(tmp_path, file_sha256(stacks.get("cpu").lock_file))
    result = _train(tmp_path / "run", f"slurm.image={image}", "slurm.container_on_nodes=true",
                    path=_path_without(tmp_path, "unsquashfs"))
    assert result.returncode == LIMITS_EXIT, result.stderr[-3000:]
    assert "unsquashfs is not on this machine's PATH" in result.stderr and "squashfs-tools" in result.stderr
    assert nothing_but_preflight(tmp_path / "run")
