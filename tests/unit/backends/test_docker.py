"""The exact container command of `--backend docker`, compared with tests/golden/docker-run.txt.

Regenerate the golden file after an intended change: LOCKSTEP_REGEN_GOLDEN=1 pytest tests/unit/backends/test_docker.py
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from runner import config as config_module
from runner.backends import docker
from runner.errors import ImageError
from runner.spec import JobSpec
from runner.stacks import containers
from runner.util import shell
from tests.helpers import hostile_project

HOSTILE = "we ird $dir; 'q' \"dq\", c"


def _prepare(tmp_path: Path, tool: str = "podman", gpus: bool = False, output: str = "runs/demo", overrides: tuple[str, ...] = ()):
    config_path = hostile_project(tmp_path, HOSTILE, output)
    config = config_module.load(config_path, (*overrides, *(["stack=cu121-torch251"] if gpus else [])))  # a CUDA stack's image
    spec = JobSpec(config=config, config_path=config_path, overrides=("train.max_steps=5",), strict_env=True, cwd=config_path.parent,
                   submission_id="20261123T120000000000Z")
    host = docker.Host(tool=tool, user="1000:1000", cache=tmp_path / "cache", hf_home=tmp_path / "hf", environ={"HF_TOKEN": "secret-value"})
    return docker.Docker(host=host).command(spec, image="lockstep/cpu:0123456789ab", image_id="sha256:feed")


def test_run_command_matches_golden_file(tmp_path, golden):
    argv = _prepare(tmp_path).argv
    golden("docker-run.txt", "\n".join(argv).replace(str(tmp_path), "{tmp}") + "\n")


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
    value = containers.mount_option(Path('/data/a,b "x"'), Path("/in"), "ro")
    assert value == 'type=bind,"source=/data/a,b ""x""",destination=/in,ro'  # as docker and podman parse it
    with pytest.raises(ImageError, match="newline"):
        containers.mount_option(Path("/a\nb"), Path("/in"), "rw")


def test_several_processes_start_the_node_launcher_in_the_image(tmp_path):
    argv = list(_prepare(tmp_path, overrides=("resources.processes_per_node=2",)).argv)
    image = argv.index("lockstep/cpu:0123456789ab")
    assert argv[image - 1] == "--entrypoint=/opt/venv/bin/python"
    assert argv[image + 1 : image + 5] == ["-m", "runner.job.launch", "--nproc-per-node=2", "--"]
    assert argv[image + 6 : image + 8] == ["--backend", "docker"]
