"""What a benchmark run records beside pytest-benchmark's numbers: the machine's memory and libraries,
the command that ran, and which benchmarks were skipped or failed, with why (tests/bench/results.py shows them)."""

from __future__ import annotations

import importlib.metadata
import os
import shlex
from typing import Any

import pytest

from tests.bench.measure import OtherProcesses

COMMAND_ENV = "LOCKSTEP_BENCH_COMMAND"  # set by `nox -s bench` and `make bench`
_outcomes: dict[str, list[dict[str, str]]] = {"skipped": [], "failed": []}


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    machine_info["ram_gib"] = _ram_gib()
    versions: dict[str, Any] = {}
    for name in ("torch", "transformers", "trl", "peft", "uv", "pip-tools"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["gpu"] = _gpu_name()
    machine_info["lockstep"] = versions


def pytest_benchmark_update_json(config: Any, benchmarks: Any, output_json: dict[str, Any]) -> None:
    command = os.environ.get(COMMAND_ENV) or shlex.join(["python", "-m", "pytest", *config.invocation_params.args])
    output_json["lockstep"] = {"command": command, **_outcomes}


@pytest.fixture(autouse=True)
def _other_processes(request: pytest.FixtureRequest):
    """Record beside each benchmark how much CPU other processes took while it ran (numbers from a busy machine are distorted)."""
    watch = OtherProcesses()
    yield
    benchmark = request.node.funcargs.get("benchmark")
    shares = watch.shares()
    if benchmark is not None and shares is not None:
        benchmark.extra_info.update(shares)


def pytest_runtest_logreport(report: Any) -> None:
    if report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _outcomes["skipped"].append({"test": report.nodeid, "reason": reason.removeprefix("Skipped: ")})
    elif report.failed:
        message = getattr(report.longrepr, "reprcrash", None)
        reason = f"{report.when}: {message.message if message else 'see the log'}"
        _outcomes["failed"].append({"test": report.nodeid, "reason": " ".join(reason.split())[:300]})


def _ram_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _gpu_name() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None
