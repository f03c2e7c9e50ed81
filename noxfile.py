"""Developer sessions: tests, extended, bench, lock, compat, wheelhouse, build, sif (`nox -l` lists them)."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Run the unit tests in a fresh environment from the cpu stack's lock."""
    _install_cpu_stack(session)
    session.run("pytest", "-m", "not slow", *session.posargs)


@nox.session(python="3.11", default=False)
def extended(session: nox.Session) -> None:
    """The extended tests, left out of `make test` for time (e.g. pip-tools vs uv pins, ~5 min)."""
    _install_cpu_stack(session)
    session.run("pytest", "-m", "extended", *session.posargs)


BENCH_DIR = "runs/bench"


@nox.session(python="3.11", default=False)
def bench(session: nox.Session) -> None:
    """Run the benchmarks (tests/bench): JSON in runs/bench/ (compared with the previous run), results in docs/benchmarks.md.

    nox -s bench -- -k lock_time            one benchmark; other arguments go to pytest
    LOCKSTEP_BENCH_ROUNDS=5 nox -s bench    more interleaved rounds per comparison (default 3; the lock one: LOCKSTEP_BENCH_LOCK_ROUNDS, 1)
    """
    import shlex

    _install_cpu_stack(session)
    Path(BENCH_DIR).mkdir(parents=True, exist_ok=True)
    command = shlex.join(["nox", "-s", "bench", *(["--", *session.posargs] if session.posargs else [])])
    # Exit code 1 (a benchmark failed) still writes the JSON: the page lists the failure, then the session fails.
    session.run("python", "-m", "pytest", "tests/bench", "-s", *_bench_options(), *session.posargs,
                env={"LOCKSTEP_BENCH_COMMAND": command}, success_codes=[0, 1])
    session.run("python", "-m", "tests.bench.results", "--latest", f"{BENCH_DIR}/latest.json", "--storage", f"{BENCH_DIR}/history",
                "--docs", "docs/benchmarks.md")


def _bench_options() -> list[str]:
    """pytest-benchmark: the run's JSON, a numbered copy kept in the history, and a comparison with the previous one there."""
    return [f"--benchmark-json={BENCH_DIR}/latest.json", f"--benchmark-storage=file://{BENCH_DIR}/history", "--benchmark-autosave",
            "--benchmark-compare", "--benchmark-sort=name"]


# What a lock is made with, at the versions and hashes the cpu stack pins (pip-tools and what it
# needs): a lock depends on the resolver that made it, so never on whichever uv is newest.
LOCK_TOOLS = ("uv", "pip-tools", "pip", "build", "click", "packaging", "pyproject-hooks", "setuptools", "wheel")


@nox.session(python="3.11")
def lock(session: nox.Session) -> None:
    """Compile lockfiles/<stack>.txt for the named stacks (all by default), with the uv and pip-tools the cpu stack pins.

    nox -s lock -- cpu mlx                   uv (default)
    nox -s lock -- cpu --engine pip-tools
    nox -s lock -- cu121-torch251 --find-links DIR   wheels standing in for PyTorch's index where it cannot be reached
    LOCKSTEP_INDEX_MIRRORS="https://download.pytorch.org/whl=URL" nox -s lock -- ...   an index reached elsewhere
    """
    from runner import stacks

    tools = Path(session.create_tmp()) / "lock-tools.txt"
    entries = stacks.entries(stacks.get("cpu").lock_file.read_text())
    tools.write_text("".join(entries[name] for name in LOCK_TOOLS))
    session.install("--require-hashes", "--no-deps", "-r", str(tools))
    session.run("python", "-m", "pip", "check", "--disable-pip-version-check")  # LOCK_TOOLS holds all they need
    session.run("python", "-m", "runner.stacks.locking", *session.posargs)


def _install_cpu_stack(session: nox.Session) -> None:
    session.run("python", "-m", "runner.stacks.install", "cpu", session.virtualenv.location, external=True)


@nox.session(python="3.11")
def compat(session: nox.Session) -> None:
    """The compatibility gate per stack (all by default): known-bad rules, hash-checked install
    into a fresh venv, pip check, imports, drift, and a real demo fine-tune; reports in runs/compat/."""
    session.install("packaging")
    session.run("python", "-m", "runner.stacks.compat", *session.posargs)


@nox.session(python="3.11")
def wheelhouse(session: nox.Session) -> None:
    """Download every wheel of the named stacks' locks into wheelhouse/STACK, hash-verified (offline installs)."""
    session.run("python", "-m", "runner.stacks.wheelhouse", *session.posargs)


@nox.session(python="3.11")
def build(session: nox.Session) -> None:
    """Build the container image of the named stacks (default: cpu) from their locks; prints tag and size.

    nox -s build -- cpu --base-image REF   a mirrored or private base image
    """
    session.run("python", "-m", "runner.stacks.images", "build", *(session.posargs or ["cpu"]))


@nox.session(python="3.11")
def sif(session: nox.Session) -> None:
    """Build the named stacks' images (default: cpu) as SIF files for Apptainer in build/sif/, checked by reading them back.

    nox -s sif -- cpu --builder siftool     without Apptainer (siftool + squashfs-tools); auto: apptainer where installed
    """
    session.run("python", "-m", "runner.stacks.sif", *(session.posargs or ["cpu"]))
