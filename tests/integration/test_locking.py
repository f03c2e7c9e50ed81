"""Locking for real with uv against PyPI: unchanged inputs give byte-identical locks."""

from __future__ import annotations

import pytest

from runner import stacks
from runner.stacks import indexes, locking

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["cpu", "mlx", "cu121-torch251-pypi"])
def test_relocking_unchanged_inputs_gives_no_diff(name, tmp_path):
    stack = stacks.get(name)
    output = locking.compile_lock(stack, find_links=indexes.pip_find_links(), output=tmp_path / f"{name}.txt")
    assert output.read_text() == stack.lock_file.read_text()


@pytest.mark.extended  # pip-compile downloads every wheel to hash it: minutes
def test_pip_tools_gives_the_same_pins_as_uv_on_the_cpu_stack(tmp_path):
    """pip-compile downloads every wheel to hash it (minutes); uv reads hashes from the index (seconds)."""
    stack = stacks.get("cpu")
    output = locking.compile_lock(stack, engine="pip-tools", find_links=indexes.pip_find_links(), output=tmp_path / "cpu.txt")
    assert stacks.pins(output.read_text()) == stacks.pins(stack.lock_file.read_text())
