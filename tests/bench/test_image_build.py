"""Image build: cold (every layer) vs warm (a code change) build time, and the image size.

`make bench` / `nox -s bench` with a container tool (podman, buildah or docker). Reports; does
not judge speed. Both builds are of a copy of the image's inputs, so the repository is untouched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from runner import containers
from tests.conftest import REPO_ROOT, copy_image_inputs

pytestmark = pytest.mark.container


def _build(checkout, env, record, *extra):
    result = subprocess.run(
        [sys.executable, "-m", "runner.images", "build", "cpu", "--json", str(record),
         "--wheelhouse", str(REPO_ROOT / "wheelhouse" / "cpu"), *extra],
        cwd=checkout, env=dict(env, PYTHONPATH=str(checkout)), capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(record.read_text())[0]


def _change_code(checkout):
    with (checkout / "runner" / "__init__.py").open("a") as handle:
        handle.write(f"# a change to the code: {uuid.uuid4()}\n")  # a new tag: the repository's image stays as it is


def test_image_build_cold_and_warm(benchmark, container_env, tmp_path):
    checkout = copy_image_inputs(tmp_path / "checkout")
    _change_code(checkout)
    cold = _build(checkout, container_env, tmp_path / "cold.json", "--no-cache")
    _change_code(checkout)
    warm = benchmark.pedantic(_build, args=(checkout, container_env, tmp_path / "warm.json"), rounds=1, iterations=1)
    tool = containers.find("build").name
    subprocess.run([tool, "rmi", cold["tag"], warm["tag"]], capture_output=True)
    report = {"cold_s": cold["seconds"], "warm_s": warm["seconds"], "warm_share": round(warm["seconds"] / cold["seconds"], 3),
              "image_bytes": warm["size"], "layers": len(warm["layers"])}
    benchmark.extra_info.update(report)
    print(f"\ncpu image: cold build {report['cold_s']:.0f} s, after a code change {report['warm_s']:.0f} s "
          f"({report['warm_share']:.0%} of cold); {report['image_bytes'] / 1e9:.2f} GB in {report['layers']} layers")
    assert not warm["reused"] and warm["tag"] != cold["tag"]  # both were real builds (layer reuse: tests/integration/test_images.py)
