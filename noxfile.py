"""Developer sessions: `nox -s tests` (more sessions: lock, build, compat, bench, as they land)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Run the unit tests in a fresh environment from the cpu stack's pins."""
    session.install("-r", "lockfiles/cpu.in")
    session.install("--no-deps", "-e", ".")
    session.run("pytest", "-m", "not slow", *session.posargs)
