"""`lockstep train --backend slurm` in Apptainer or charliecloud refuses, before submitting anything, a job
that could not run: no SIF, a SIF built from another lock of the stack, a bind whose source does not exist."""

from __future__ import annotations

import shutil

import pytest

from runner import stacks
from runner.stacks import containers, sif
from runner.util.hashing import file_sha256
from tests.helpers import DEMO_CONFIG, nothing_but_preflight, run_lockstep, skip_or_fail

LIMITS_EXIT = 10  # what the backend cannot run: refused before submitting, like a platform limit


RUNTIMES = pytest.mark.parametrize("runtime", ["apptainer", "charliecloud"])


def _train(run_dir, *settings: str, runtime: str = "charliecloud"):
    return run_lockstep("train", str(DEMO_CONFIG), "--backend", "slurm", "--set", f"output_dir={run_dir}",
                        "--set", f"slurm.container={runtime}", *(arg for item in settings for arg in ("--set", item)))


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
