"""The exact container command of `--backend docker`, compared with tests/golden/docker-run.txt.

Regenerate the golden file after an intended change: LOCKSTEP_REGEN_GOLDEN=1 pytest tests/unit/test_docker_backend.py
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from runner import config as config_module
from runner import shell
from runner.backends import docker
from runner.errors import ImageError
from tests.conftest import REPO_ROOT, hostile_project

GOLDEN = REPO_ROOT / "tests" / "golden" / "docker-run.txt"
HOSTILE = "we ird $dir; 'q' \"dq\", c"


def _prepare(tmp_path: Path, tool: str = "podman", gpus: bool = False, output: str = "runs/demo", overrides: tuple[str, ...] = ()):
    config_path = hostile_project(tmp_path, HOSTILE, output)
    cwd = config_path.parent
    config = config_module.load(config_path, overrides)
    return docker.prepare(
        config, config_path, ["train.max_steps=5"], tool=tool, image="lockstep/cpu:0123456789ab", image_id="sha256:feed",
        gpus=gpus, fresh=False, strict_env=True, host_cache=tmp_path / "cache", hf_home=tmp_path / "hf", cwd=cwd,
        user="1000:1000", environ={"HF_TOKEN": "secret-value"},
    )


def test_run_command_matches_golden_file(tmp_path):
    argv = _prepare(tmp_path).argv
    text = "\n".join(argv).replace(str(tmp_path), "{tmp}") + "\n"
    if os.environ.get("LOCKSTEP_REGEN_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), f"the container command changed; if intended: LOCKSTEP_REGEN_GOLDEN=1 pytest {__file__}"


def test_hostile_paths_survive_as_single_arguments(tmp_path):
    argv = _prepare(tmp_path).argv
    assert shlex.split(shell.join(argv)) == list(argv)
    assert f"--workdir={tmp_path / HOSTILE}" in argv
    assert "secret-value" not in shell.join(argv) and "--env=HF_TOKEN" in argv  # passed by name only
    assert any(arg.endswith(",ro") and "data $shared" in arg for arg in argv)  # data outside the working directory


def test_output_outside_the_working_directory_is_mounted_writable(tmp_path):
    outside = tmp_path / "elsewhere" / "run"
    submission = _prepare(tmp_path, output=str(outside))
    assert f"--mount=type=bind,source={outside},destination={outside}" in submission.argv
    assert str(outside) in submission.create_dirs


def test_gpus_per_tool(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert "--gpus=all" in _prepare(tmp_path / "a", tool="docker", gpus=True).argv
    assert "--device=nvidia.com/gpu=all" in _prepare(tmp_path / "b", tool="podman", gpus=True).argv


def test_mount_values_are_one_csv_record_whatever_the_path():
    value = docker.mount_option(Path('/data/a,b "x"'), Path("/in"), "ro")
    assert value == 'type=bind,"source=/data/a,b ""x""",destination=/in,ro'  # as docker and podman parse it
    with pytest.raises(ImageError, match="newline"):
        docker.mount_option(Path("/a\nb"), Path("/in"), "rw")


def test_several_processes_start_the_node_launcher_in_the_image(tmp_path):
    argv = list(_prepare(tmp_path, overrides=("resources.processes_per_node=2",)).argv)
    image = argv.index("lockstep/cpu:0123456789ab")
    assert argv[image - 1] == "--entrypoint=/opt/venv/bin/python"
    assert argv[image + 1 : image + 5] == ["-m", "runner.launch", "--nproc-per-node=2", "--"]
    assert argv[image + 6 : image + 8] == ["--backend", "docker"]
