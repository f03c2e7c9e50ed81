"""The local index of a stack's project_index projects, its fallback from wheel folders, and index mirrors."""

from __future__ import annotations

import pytest

from runner import stacks
from runner.errors import StackError
from runner.stacks import ProjectIndex, indexes, local_index
from runner.util.hashing import file_sha256
from tests import pytorch_index

CU121 = ProjectIndex("https://download.pytorch.org/whl/cu121", ("torch", "torchaudio", "triton"))


def test_pages_are_copied_with_absolute_links_and_an_unserved_project_gets_an_empty_page(tmp_path, monkeypatch):
    root = tmp_path / "copy"
    digests = pytorch_index.write(root, {"cu121": pytorch_index.VARIANTS["cu121"]})
    with pytorch_index.serve(root) as served:
        monkeypatch.setenv(indexes.MIRRORS_VARIABLE, f"https://download.pytorch.org/whl={served.url}")
        local_index.from_index(CU121, tmp_path / "local")
    torch_page = (tmp_path / "local" / "torch" / "index.html").read_text()
    wheel = "torch-2.5.1+cu121-cp311-cp311-linux_x86_64.whl"
    assert f'href="{served.url}/cu121/torch-2.5.1%2Bcu121-cp311-cp311-linux_x86_64.whl#sha256={digests[wheel]}"' in torch_page
    assert 'data-requires-python="&gt;=3.8.0"' in torch_page
    # torchaudio is not served there: an empty page, so no resolver looks for it on PyPI instead
    assert local_index.found(tmp_path / "local") == {"torch": 1, "torchaudio": 0, "triton": 1}
    assert not (tmp_path / "local" / "numpy").exists()  # the index serves numpy too; it is not declared


def test_the_wheel_folder_fallback_lists_only_the_declared_projects(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    for release in pytorch_index.VARIANTS["cu121"][:1] + [r for r in pytorch_index.SHARED if r.name in ("triton", "numpy")]:
        (folder / release.filename).write_bytes(pytorch_index.wheel(release))
    (folder / "notes.txt").write_text("not a distribution")
    local_index.from_wheels(CU121, [str(folder), str(tmp_path / "absent")], tmp_path / "local")
    assert local_index.found(tmp_path / "local") == {"torch": 1, "torchaudio": 0, "triton": 1}  # numpy stays out of the lock
    wheel = folder / "triton-3.1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    assert f'{wheel.as_uri()}#sha256={file_sha256(wheel)}' in (tmp_path / "local" / "triton" / "index.html").read_text()


def test_a_mirror_replaces_the_address_of_an_index_and_of_nothing_else(monkeypatch):
    monkeypatch.setenv(indexes.MIRRORS_VARIABLE, "https://download.pytorch.org/whl=http://127.0.0.1:8000/whl/ https://x.example=https://y")
    assert indexes.address("https://download.pytorch.org/whl/cu121") == "http://127.0.0.1:8000/whl/cu121"
    assert indexes.address("https://download.pytorch.org/whlx") == "https://download.pytorch.org/whlx"
    assert indexes.address("https://pypi.org/simple") == "https://pypi.org/simple"
    monkeypatch.setenv(indexes.MIRRORS_VARIABLE, "https://download.pytorch.org/whl")
    with pytest.raises(StackError, match=r"LOCKSTEP_INDEX_MIRRORS: 'https://download.pytorch.org/whl' is not PREFIX=REPLACEMENT"):
        indexes.address("https://download.pytorch.org/whl/cu121")


def test_a_malformed_project_index_is_named(tmp_path):
    (tmp_path / "a.in").write_text("torch\n")
    (tmp_path / "stacks.toml").write_text(
        '[stacks.a]\ndescription = "d"\npython = "3.11"\nplatforms = ["x86_64-manylinux_2_28"]\nindex_url = "https://pypi.org/simple"\n'
        'resolved_before = "2026-11-23T00:00:00Z"\nrequirements = "a.in"\nbase_image = "b"\naccelerator = "cpu"\nengine = "hf"\n'
        'project_index = { url = "https://download.pytorch.org/whl/cpu", packages = ["torch"] }\n'
    )
    with pytest.raises(StackError, match=r"stack a: project_index must be a table of url .* and projects"):
        stacks.load(tmp_path)
