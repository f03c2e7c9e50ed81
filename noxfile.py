"""Developer sessions: `nox -s tests`, `nox -s bench` (more sessions: lock, build, compat, as they land)."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Run the unit tests in a fresh environment from the cpu stack's pins."""
    session.install("-r", "lockfiles/cpu.in")
    session.install("--no-deps", "-e", ".")
    session.run("pytest", "-m", "not slow", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Run the benchmarks (tests/bench) and keep their numbers in runs/bench/latest.json."""
    session.install("-r", "lockfiles/cpu.in")
    session.install("--no-deps", "-e", ".")
    Path("runs/bench").mkdir(parents=True, exist_ok=True)
    session.run("python", "-m", "pytest", "tests/bench", "-s", "--benchmark-json=runs/bench/latest.json", *session.posargs)
