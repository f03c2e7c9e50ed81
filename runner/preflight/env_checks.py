"""Preflight's checks of the environment a run will use: the stack's lock, drift and known-bad
combinations, the engine's libraries, the environment variables torch and tokenizers read, and
whether the run directory can be written, with free disk space for checkpoints.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner import stacks
from runner.config import RunConfig
from runner.errors import LockstepError
from runner.preflight.hardware import Hardware
from runner.preflight.memory import ModelShape
from runner.problems import Check
from runner.stacks import drift, environment, known_bad
from runner.training import allocator as allocator_module

GIB = 2**30
OUTPUTS_BYTES = 10 * 2**20  # metrics, plots, logs, reports: a few MiB even for long runs


def dependencies(config: RunConfig, backend: str, strict_env: bool) -> list[Check]:
    """This environment for a local run; the stack's lock for a run in another stack's environment,
    in its image or on a cluster."""
    from runner.stacks import venv as stack_venv

    handed_off = stack_venv.target(config) if backend == "local" else None
    if backend == "local" and handed_off is None:
        return _this_environment(strict_env) + _engine(config) + _trackers(config, None, "this environment")
    name = handed_off or environment.container_stack(config.stack)
    try:
        stack = stacks.get(name)
    except LockstepError as exc:
        return [Check(name="lock", status="error", summary=str(exc), fix="set `stack:` in the config to one of lockfiles/stacks.toml")]
    problem = stack.lock_problem()
    if problem:
        return [Check(name="lock", status="error", summary=problem, fix=f"nox -s lock -- {name}")]
    lock = Check(name="lock", status="ok", summary=f"stack {name}: {stack.lock_file.name} is current"
                 + (" (a local run trains in its environment, made from the lock on first use)" if handed_off else ""))
    pins = stacks.pins(stack.lock_file.read_text())
    return [lock, *_known_bad(pins, f"the lock of stack {name}"), *_engine_elsewhere(config, backend),
            *_trackers(config, pins, f"the lock of stack {name}")]


def _this_environment(strict_env: bool) -> list[Check]:
    try:
        described = environment.describe()
    except LockstepError as exc:
        return [Check(name="lock", status="error", summary=str(exc), fix="re-lock the stack (nox -s lock -- STACK) or reinstall this environment")]
    installed = {name: [version] for name, version in drift.installed().items()}
    found = _known_bad(installed, "this environment")
    if described["stack"] is None:
        return [Check(name="lock", status="warning", summary="this environment was not installed from a stack: the manifest cannot prove what ran",
                      fix="make one with `python -m runner.stacks.install cpu .venv` (as `make train` does)"), *found]
    checks = [Check(name="lock", status="ok", summary=f"stack {described['stack']}: its lock is current")]
    if described["drift"]["clean"]:
        checks.append(Check(name="drift", status="ok", summary=f"installed packages equal the lock of stack {described['stack']}"))
    else:
        checks.append(Check(name="drift", status="error" if strict_env else "warning",
                            summary=f"this environment differs from the lock of stack {described['stack']}: {drift.describe(described['drift'])}",
                            fix=_drift_fix(described["stack"], described["drift"])))
    return checks + found


def _drift_fix(stack: str, result: dict[str, Any]) -> str:
    """Reinstalling puts back what is missing or changed but removes nothing, so extras need another fix."""
    extra = [entry.split("==", 1)[0] for entry in result.get("extra", [])]
    if not extra:
        return f"reinstall it: python -m runner.stacks.install {stack} VENV"
    return (f"make a fresh environment: python -m runner.stacks.install {stack} NEW_VENV (reinstalling in place removes "
            f"nothing; `pip uninstall {' '.join(extra)}` removes what the lock does not list)")


def _known_bad(pins: dict[str, list[str]], where: str) -> list[Check]:
    try:
        findings = known_bad.evaluate(pins, known_bad.load())
    except LockstepError as exc:
        return [Check(name="known-bad", status="error", summary=str(exc), fix="fix lockfiles/known-bad.toml")]
    if not findings:
        return [Check(name="known-bad", status="ok", summary=f"no known-bad combination in {where}")]
    return [Check(name="known-bad", status="error" if f.rule.severity == "error" else "warning",
                  summary=f"{where}: {f.rule.id} ({', '.join(f'{n} {v}' for n, v in f.versions.items())}): {f.rule.problem}",
                  fix=f"{f.rule.fix} (source: {f.rule.source})") for f in findings]


def _engine(config: RunConfig) -> list[Check]:
    from runner import engines

    try:
        engines.check(config)
        name = engines.select(config)
    except ImportError as exc:
        return [Check(name="engine", status="error", summary=f"the training libraries are not installed here ({exc})",
                      fix="train in a stack's environment: `make train`, or python -m runner.stacks.install cpu .venv")]
    except LockstepError as exc:
        return [Check(name="engine", status="error", summary=str(exc), fix="see the message; or choose another backend")]
    return [Check(name="engine", status="ok", summary=f"engine {name} can run this config here")]


def _trackers(config: RunConfig, pins: Mapping[str, list[str]] | None, where: str) -> list[Check]:
    """The packages of the trackers the config turns on, in this environment (pins None) or in a stack's lock."""
    from runner.training import tracking

    wanted = tracking.packaged(config)
    if not wanted:
        return []
    missing = [key for key in wanted if not tracking.provided(key, pins)]
    if missing:
        return [Check(name="tracking", status="error", summary=f"tracking.{key} is on, but {where} has no {tracking.PACKAGES[key]}",
                      fix=f"add {tracking.PACKAGES[key]} to the stack's lockfiles/<stack>.in and re-lock (nox -s lock -- <stack>), "
                          f"or set tracking.{key}: false") for key in missing]
    return [Check(name="tracking", status="ok", summary=f"{', '.join(wanted)}: installed in {where}")]


def _engine_elsewhere(config: RunConfig, backend: str) -> list[Check]:
    """What can be told of the engine before its environment exists (the job checks the rest when it starts)."""
    if config.engine != "mlx":
        return []
    from runner.engines import mlx_config

    if backend not in mlx_config.BACKENDS:
        return [Check(name="engine", status="error", summary=f"engine mlx runs with --backend local only, not {backend}: "
                      "MLX trains on a Mac's own GPU, which containers and clusters do not have", fix="use --backend local, or engine: hf")]
    problems = mlx_config.unsupported(config)
    if problems:
        return [Check(name="engine", status="error", summary="engine mlx cannot honour " + "; ".join(problems), fix="change those settings")]
    return [Check(name="engine", status="ok", summary="engine mlx can run this config")]


def allocator(hardware: Hardware, torch_version: str | None, job_env: Mapping[str, str]) -> Check:
    """The CUDA allocator setting, under the name the run's torch reads (see runner.training.allocator)."""
    name = "env.allocator"
    if hardware.accelerator != "cuda":
        return Check(name=name, status="ok", summary=f"no CUDA device: torch's CUDA allocator settings do not apply on {hardware.accelerator}")
    if torch_version is None:
        return Check(name=name, status="ok", summary="torch's version is unknown here; the job sets the allocator variable its torch reads")
    reads = allocator_module.variable_for(torch_version)
    environ = {**os.environ, **job_env}  # distributed.env reaches the job; this shell's variables reach local and Slurm jobs
    new, old = environ.get(allocator_module.NEW_NAME), environ.get(allocator_module.OLD_NAME)
    if new is None and old is None:
        return Check(name=name, status="ok", summary=f"the job sets {reads}={allocator_module.EXPANDABLE} (the name torch {torch_version} reads)")
    value = new if reads == allocator_module.NEW_NAME else old
    if value is not None and allocator_module.expandable(value):
        return Check(name=name, status="ok", summary=f"{reads}={value} (the name torch {torch_version} reads)")
    if reads == allocator_module.NEW_NAME and old is not None and allocator_module.expandable(old):
        return Check(name=name, status="ok", summary=f"{allocator_module.OLD_NAME}={old} (torch {torch_version} still reads this deprecated alias)")
    if new is not None and allocator_module.expandable(new):
        why = "ignores its expandable_segments on CUDA" if allocator_module.release(torch_version) >= allocator_module.NEW_NAME_EXISTS else "does not know this name"
        return Check(name=name, status="warning", summary=f"{allocator_module.NEW_NAME}={new} is set, but torch {torch_version} {why}",
                     fix=f"set {allocator_module.OLD_NAME}={new} instead (or unset both: lockstep then sets the right one)")
    return Check(name=name, status="warning", summary=f"the allocator variables are set without expandable segments ({reads}={value})",
                 fix=f"add expandable_segments:True to {reads}, or unset it and let lockstep set it; fragmentation can end a run that would fit")


def tokenizers_parallelism() -> Check:
    value = os.environ.get("TOKENIZERS_PARALLELISM")
    if value is None:
        return Check(name="env.tokenizers", status="ok",
                     summary="TOKENIZERS_PARALLELISM unset: lockstep tokenizes before training, before any worker process forks")
    return Check(name="env.tokenizers", status="ok", summary=f"TOKENIZERS_PARALLELISM={value}")


def checkpoint_bytes(shape: ModelShape, config: RunConfig) -> int:
    """One checkpoint: the fp32 adapter and AdamW's two states, plus the trainer's state and RNG."""
    return shape.lora_parameters(config.lora.r) * (4 + 8) + 2**20


def disk(run_dir: Path, shape: ModelShape | None, config: RunConfig, download_bytes: int) -> Check:
    """Free space where checkpoints go: keep_last of them, one more being written, the adapter, and a download."""
    if shape is None:
        return Check(name="disk", status="ok", summary="checkpoint size unknown (model shape unknown); not checked")
    lora = shape.lora_parameters(config.lora.r)
    checkpoint = checkpoint_bytes(shape, config)
    needed = checkpoint * (config.checkpoint.keep_last + 1) + lora * 4 + OUTPUTS_BYTES + download_bytes
    existing = next(parent for parent in (run_dir, *run_dir.parents) if parent.exists())
    free = shutil.disk_usage(existing).free
    text = (f"{free / GIB:.1f} GiB free at {existing}; the run needs about {needed / GIB:.2f} GiB "
            f"({config.checkpoint.keep_last}+1 checkpoints of {checkpoint / 2**20:.0f} MiB"
            + (f", {download_bytes / GIB:.1f} GiB of weights to download" if download_bytes else "") + ")")
    if free < needed:
        return Check(name="disk", status="error", summary=text, fix="free space, point output_dir at a larger disk, or lower checkpoint.keep_last")
    if free < 2 * needed:
        return Check(name="disk", status="warning", summary=text, fix="less than twice what the run needs is free; other writers could fill it")
    return Check(name="disk", status="ok", summary=text)


def writable(run_dir: Path) -> Check:
    """Whether the run directory can be made and written, tried for real (permission bits say nothing of a
    read-only mount, and root passes every access() test): a directory made and removed in the nearest
    existing one of the run directory and its parents."""
    existing = next(parent for parent in (run_dir, *run_dir.parents) if parent.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(existing))
        os.rmdir(tempfile.mkdtemp(prefix=".lockstep-write-test-", dir=existing))
    except OSError as exc:
        return Check(name="output_dir", status="error", summary=f"cannot write {existing}: {exc.strerror}",
                     fix="choose an output_dir this user can create and write, on a filesystem mounted read-write")
    where = "" if existing == run_dir else f" (made under {existing})"
    return Check(name="output_dir", status="ok", summary=f"{run_dir} can be written{where}")
