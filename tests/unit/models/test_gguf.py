"""GGUF files that cannot become a model get a clear ModelError and leave nothing in the cache: an architecture
transformers does not load, a file cut short, a file that is no GGUF file at all. Files written with the gguf
package's own writer, as llama.cpp's converters write them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runner.errors import ModelError
from runner.models import gguf as gguf_model

gguf = pytest.importorskip("gguf", reason="the gguf package is part of the cpu stack")


def _write(path: Path, architecture: str, tensors: dict[str, np.ndarray]) -> Path:
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name(f"a tiny {architecture}")
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cached(cache: Path) -> list[Path]:
    return list(cache.rglob("*")) if cache.exists() else []


def test_the_header_gives_architecture_parameters_and_quantization(tmp_path):
    path = _write(tmp_path / "m.gguf", "llama", {"a.weight": np.zeros((4, 8), np.float32), "b.weight": np.zeros(4, np.float16)})
    summary = gguf_model.summary(path)
    assert (summary.architecture, summary.name, summary.parameters) == ("llama", "a tiny llama", 36)
    assert summary.quantization == "F32 (also F16)"


def test_an_architecture_transformers_cannot_load_is_refused_and_nothing_is_cached(tmp_path, cache):
    path = _write(tmp_path / "rwkv.gguf", "rwkv6", {"token_embd.weight": np.zeros((4, 4), np.float32)})
    with pytest.raises(ModelError, match=r"cannot load GGUF files of architecture 'rwkv6' \(it loads .*llama"):
        gguf_model.converted(path)
    assert [p for p in _cached(cache) if p.is_file()] == []


def test_a_truncated_file_is_named_as_cut_short_and_nothing_is_cached(tmp_path, cache):
    whole = _write(tmp_path / "whole.gguf", "llama", {"a.weight": np.ones((64, 64), np.float32)}).read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ModelError, match="not a complete GGUF file .*cut short"):
        gguf_model.converted(cut)
    assert [p for p in _cached(cache) if p.is_file()] == []


def test_a_file_that_is_no_gguf_file_says_so(tmp_path, cache):
    other = tmp_path / "notes.gguf"
    other.write_text("not a model\n")
    with pytest.raises(ModelError, match="not a GGUF file"):
        gguf_model.converted(other)


def test_a_missing_file_says_which(tmp_path, cache):
    with pytest.raises(ModelError, match="no such GGUF file"):
        gguf_model.converted(tmp_path / "absent.gguf")
