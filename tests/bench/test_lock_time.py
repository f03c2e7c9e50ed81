"""Lock time: uv against pip-tools on the cpu stack, with an empty and with a warm cache.

Each engine compiles a copy of `lockfiles/cpu.in` (torch's CPU build comes from
pip's configured find-links, as `nox -s lock -- cpu` does where PyTorch's index is out of
reach) through `runner.stacks.locking.compile_lock` into a temporary file: the repository's locks are
never written. Cold: a new, empty cache directory (UV_CACHE_DIR, PIP_CACHE_DIR and
XDG_CACHE_HOME, where pip-tools keeps its own). Warm: the same command again with the cache the
cold run filled. The order alternates by round (uv first, then pip-tools first, ...).

lockstep's uv command passes `--refresh` (re-locking must see the index as it is), so uv's warm
run still revalidates what it cached; pip-compile reads pip's configuration (its indexes and
find-links) as well as the stack's. Not a timed test: it asserts that each lock was written and
that both engines pinned the same versions.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from runner import stacks
from runner.stacks import indexes, locking
from tests.bench import measure

STACK = "cpu"
ENGINES = ("uv", "pip-tools")


@pytest.fixture
def cache_env(monkeypatch):
    """A function that points the engines' caches at a directory (the engines' processes inherit os.environ)."""

    def point_at(directory: Path) -> None:
        for variable, name in (("UV_CACHE_DIR", "uv"), ("PIP_CACHE_DIR", "pip"), ("XDG_CACHE_HOME", "xdg")):
            monkeypatch.setenv(variable, str(directory / name))

    return point_at


def test_lock_time_uv_against_pip_tools(benchmark, tmp_path, cache_env):
    stack = stacks.get(STACK)
    copy = tmp_path / "lockfiles"
    copy.mkdir()
    (copy / stack.requirements).write_bytes(stack.input_file.read_bytes())
    work = dataclasses.replace(stack, root=copy)  # `# via -r cpu.in` annotations stay the same
    find_links = indexes.pip_find_links()
    count = measure.rounds(1, "LOCKSTEP_BENCH_LOCK_ROUNDS")  # pip-compile takes minutes; the ratio is far above the noise
    pins: dict[str, dict[str, list[str]]] = {}

    def engine_round(engine: str):
        def run(index: int) -> dict[str, float]:
            cache = tmp_path / f"cache-{engine}-{index}"
            cache_env(cache)
            seconds = {}
            for kind in ("cold", "warm"):
                output = tmp_path / f"{engine}-{index}-{kind}.txt"
                started = time.perf_counter()
                locking.compile_lock(work, engine=engine, find_links=find_links, output=output)
                seconds[kind] = time.perf_counter() - started
                text = output.read_text()
                assert "--hash=sha256:" in text
                pins[f"{engine}-{index}-{kind}"] = stacks.pins(text)
            seconds["cache_mb"] = _size_mb(cache)
            return seconds

        return run

    results = benchmark.pedantic(measure.interleaved, args=({engine: engine_round(engine) for engine in ENGINES}, count),
                                 rounds=1, iterations=1)

    # Every lock pins the same versions (same inputs, same cut-off date), whichever engine made it.
    expected = pins["uv-0-cold"]
    for name, found in pins.items():
        assert found == expected, f"{name}: {sorted(set(found.items()) ^ set(expected.items()))[:10]}"

    report: dict[str, object] = {"rounds": count, "stack": STACK, "packages": len(expected)}
    for engine in ENGINES:
        key = engine.replace("-", "_")
        for kind in ("cold", "warm"):
            report[f"{key}_{kind}_s"] = round(measure.median([r[kind] for r in results[engine]]), 2)
        report[f"{key}_cache_mb"] = round(measure.median([r["cache_mb"] for r in results[engine]]), 1)
    for kind in ("cold", "warm"):
        report[f"{kind}_ratio"] = measure.ratio(report[f"pip_tools_{kind}_s"], report[f"uv_{kind}_s"], digits=1)  # type: ignore[arg-type]
    benchmark.extra_info.update(report)
    print(f"\nlock of {STACK} ({report['packages']} packages): uv {report['uv_cold_s']} s cold, {report['uv_warm_s']} s warm; "
          f"pip-tools {report['pip_tools_cold_s']} s cold, {report['pip_tools_warm_s']} s warm; "
          f"pip-tools / uv = {report['cold_ratio']} cold, {report['warm_ratio']} warm")


def _size_mb(directory: Path) -> float:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                total += path.stat().st_size
    return total / 2**20
