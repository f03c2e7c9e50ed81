"""Where lockstep keeps what it builds: the cache root's order of settings, and the built models under it."""

from __future__ import annotations

from pathlib import Path

from runner.demo import tiny_model
from runner.util import cache


def test_cache_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.root() == tmp_path / "explicit"
    monkeypatch.setenv("LOCKSTEP_CACHE", "")  # empty counts as unset
    assert cache.root() == tmp_path / "xdg" / "lockstep"
    monkeypatch.delenv("LOCKSTEP_CACHE")
    assert cache.root() == tmp_path / "xdg" / "lockstep"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.root() == tmp_path / "home" / ".cache" / "lockstep"


def test_built_models_live_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path))
    assert tiny_model.cache_dir() == tmp_path / "models"
    assert isinstance(tiny_model.cache_dir(), Path)
