"""The image's identity and inputs: tag, staged context, build commands (no builder needed)."""

from __future__ import annotations

import re

import pytest

from runner import stacks
from runner.stacks import containers, images, wheelhouse
from tests.helpers import REPO_ROOT, copy_image_inputs


@pytest.fixture()
def checkout(tmp_path):
    return copy_image_inputs(tmp_path / "checkout")


def test_same_inputs_same_tag_and_a_code_change_keeps_the_lock_hash(checkout):
    stack = stacks.get("cpu", root=checkout / "lockfiles")
    first, again = images.spec(stack), images.spec(stack)
    assert first.tag == again.tag
    assert re.fullmatch(r"lockstep/cpu:[0-9a-f]{12}", first.tag)
    with (checkout / "runner" / "cli.py").open("a") as handle:
        handle.write("# changed\n")
    changed = images.spec(stack)
    assert changed.lock_sha256 == first.lock_sha256 and changed.code_sha256 != first.code_sha256
    assert changed.tag != first.tag
    assert images.spec(stack, base_image="registry.example/python:3.11").tag != changed.tag


def test_context_holds_exactly_the_image_inputs(checkout, tmp_path):
    stack = stacks.get("cpu", root=checkout / "lockfiles")
    (checkout / "runner" / "__pycache__").mkdir(exist_ok=True)
    (checkout / "runner" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"stale")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"wheel")
    context = images.stage_context(images.spec(stack), tmp_path / "context", wheels)
    staged = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
    assert {"docker/Dockerfile", "docker/install-lock.sh", "docker/install-python.sh", "pyproject.toml",
            "lockfiles/cpu.txt", "lockfiles/stacks.toml", "runner/job/entry.py", "wheelhouse/demo-1.0-py3-none-any.whl"} <= staged
    assert not any("__pycache__" in path or path.startswith(".venv") for path in staged)
    assert "lockfiles/mlx.txt" not in staged  # another stack's lock is not an input of this image


def test_build_commands_pin_every_timestamp():
    args = dict(context=REPO_ROOT, dockerfile=REPO_ROOT / "docker" / "Dockerfile", tag="lockstep/cpu:0", build_args={"STACK": "cpu"}, timestamp=1700000000)
    podman = containers.Tool("podman").build_argv(**args)
    assert podman[:4] == ["podman", "build", "--layers", "--timestamp=1700000000"] and "--build-arg=STACK=cpu" in podman
    assert containers.Tool("buildah").build_argv(**args)[:2] == ["buildah", "bud"]
    docker = containers.Tool("docker").build_argv(**args, no_cache=True, target="deps")
    assert "--output=type=docker,name=lockstep/cpu:0,rewrite-timestamp=true" in docker
    assert "--build-arg=SOURCE_DATE_EPOCH=1700000000" in docker and "--no-cache" in docker and "--target=deps" in docker


def test_wheels_are_fetched_for_the_stack_platform_with_every_older_manylinux_tag_and_pytorchs_plain_one():
    args = wheelhouse.platform_args(stacks.get("cpu"))
    platforms = [arg.removeprefix("--platform=") for arg in args if arg.startswith("--platform=")]
    assert platforms[0] == "manylinux_2_28_x86_64" and "manylinux2014_x86_64" in platforms and "manylinux_2_17_x86_64" in platforms
    assert "linux_x86_64" in platforms  # torch-2.5.1+cu121-cp311-cp311-linux_x86_64.whl
    assert "--python-version=3.11" in args and "--only-binary=:all:" in args
    assert wheelhouse.platform_args(stacks.get("mlx")) == []  # universal: this machine's wheels


def test_apptainer_definition_installs_like_the_dockerfile():
    text = (REPO_ROOT / "docker" / "lockstep.def").read_text()
    defaults = dict(re.findall(r"^\s+([A-Z_]+)=(\S+)$", text.split("%arguments")[1].split("%files")[0], re.MULTILINE))
    rendered = re.sub(r"\{\{ (\w+) \}\}", lambda match: defaults[match.group(1)], text)
    sources = [line.split()[0] for line in rendered.split("%files")[1].split("%post")[0].strip().splitlines()]
    for source in sources:
        if not source.startswith("wheelhouse/"):  # made by `nox -s wheelhouse`
            assert (REPO_ROOT / source).exists(), source
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    for script in ("install-python.sh", "install-lock.sh"):
        assert script in rendered.split("%post")[1] and script in dockerfile
    assert 'exec python -m runner.job "$@"' in rendered and '["python", "-m", "runner.job"]' in dockerfile
