"""Image build: cold (every layer) vs warm (a code change) build time, and the image size, per stack.

`make bench` / `nox -s bench` with a container tool (podman, buildah or docker). Reports; does
not judge speed. Both builds are of a copy of the image's inputs, so the repository is untouched.
Stacks: those whose images build on an x86_64 Linux machine without a GPU or PyTorch's own
indexes: `cpu`, and `mlx` (its universal lock installs `mlx[cpu]` on Linux). The wheelhouse
is filled (downloaded and hash-checked) before the timed builds, which re-verify it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from runner.stacks import containers
from tests.helpers import REPO_ROOT, copy_image_inputs

pytestmark = pytest.mark.container
STACKS = ("cpu", "mlx")


def _fill_wheelhouse(stack, env):
    wheels = REPO_ROOT / "wheelhouse" / stack
    result = subprocess.run([sys.executable, "-m", "runner.stacks.wheelhouse", stack, "--dest", str(wheels)], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    return wheels


def _build(checkout, env, record, stack, wheels, *extra):
    result = subprocess.run(
        [sys.executable, "-m", "runner.stacks.images", "build", stack, "--json", str(record), "--wheelhouse", str(wheels), *extra],
        cwd=checkout, env=dict(env, PYTHONPATH=str(checkout)), capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(record.read_text())[0]


def _change_code(checkout):
    with (checkout / "runner" / "__init__.py").open("a") as handle:
        handle.write(f"# a change to the code: {uuid.uuid4()}\n")  # a new tag: the repository's image stays as it is


@pytest.mark.parametrize("stack", STACKS)
def test_image_build_cold_and_warm(benchmark, container_env, tmp_path, stack):
    wheels = _fill_wheelhouse(stack, container_env)
    checkout = copy_image_inputs(tmp_path / "checkout")
    # A `--no-cache` build leaves no layers for later builds to reuse, so an ordinary build first
    # fills the builder's cache with this lock's layers (quick when they are there already).
    _change_code(checkout)
    primed = _build(checkout, container_env, tmp_path / "primed.json", stack, wheels)
    _change_code(checkout)
    cold = _build(checkout, container_env, tmp_path / "cold.json", stack, wheels, "--no-cache")
    _change_code(checkout)
    warm = benchmark.pedantic(_build, args=(checkout, container_env, tmp_path / "warm.json", stack, wheels), rounds=1, iterations=1)
    tool = containers.find("build").name
    subprocess.run([tool, "rmi", primed["tag"], cold["tag"], warm["tag"]], capture_output=True)
    report = {"stack": stack, "cold_s": cold["seconds"], "warm_s": warm["seconds"], "warm_share": round(warm["seconds"] / cold["seconds"], 3),
              "image_bytes": warm["size"], "layers": len(warm["layers"]), "tool": tool}
    benchmark.extra_info.update(report)
    print(f"\n{stack} image: cold build {report['cold_s']:.0f} s, after a code change {report['warm_s']:.0f} s "
          f"({report['warm_share']:.0%} of cold); {report['image_bytes'] / 1e9:.2f} GB in {report['layers']} layers")
    assert not warm["reused"] and warm["tag"] != cold["tag"]  # both were real builds (layer reuse: tests/integration/test_images.py)
