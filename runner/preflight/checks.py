"""Preflight: everything a run will need, checked before anything is spent: hardware, dependencies,
data, model, memory, disk, environment variables and the backend's limits; plus the settings
that fit the hardware. `lockstep preflight` prints it; `lockstep train` runs it first and refuses
on errors not waived.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from runner import backends, stacks
from runner.errors import LockstepError
from runner.preflight import data_checks, env_checks, hardware, lora_check, model_check, stop_check
from runner.preflight.hardware import Hardware
from runner.preflight.model_check import ModelInfo
from runner.preflight.recommend import Recommendation, Settings, estimate_for, recommend
from runner.problems import Check
from runner.spec import JobSpec

GIB = 2**30
UNWAIVABLE = frozenset({"limits"})  # the platform refuses such a job whatever lockstep allows


@dataclass(frozen=True, kw_only=True)
class PreflightResult:
    backend: str
    checks: list[Check]
    hardware: Hardware | None
    model: ModelInfo
    token_stats: dict[str, Any] | None = None
    estimate: dict[str, float] | None = None  # GiB per part at the configured settings
    recommendation: Recommendation | None = None
    unknown_waivers: list[str] = field(default_factory=list)

    @property
    def blocking(self) -> list[Check]:
        return [check for check in self.checks if check.blocks]


def run(spec: JobSpec, backend: str, *, hardware_profile: str | None = None, waive: Sequence[str] = ()) -> PreflightResult:
    """Every check for `spec` on `backend`; errors named in `waive` (or under a waived prefix) do not block."""
    config = spec.config
    checks = env_checks.dependencies(config, backend, spec.strict_env)
    splits = data_checks.read_splits(config)
    checks += data_checks.check_splits(splits)
    model_checks, info = model_check.inspect(config)
    checks += model_checks + ([lora_check.check(config, info.config)] if info.config is not None else [])
    token_check, stats = _tokens(spec, splits, info)
    checks += [token_check]
    target, hardware_checks = _hardware(config, backend, hardware_profile)  # after the libraries load: their memory is measured
    checks = hardware_checks + checks
    estimate, recommendation, memory_checks = _memory(spec, info, target, stats)
    checks += memory_checks
    checks += [env_checks.writable(spec.run_dir)] if backend != "modal" else []
    checks.append(_disk(spec, backend, info))
    checks.append(stop_check.check(config, backend, info.shape, spec.run_dir))
    checks += [env_checks.allocator(target, _torch_version(config, backend), config.distributed.env) if target else
               Check(name="env.allocator", status="ok", summary="hardware unknown: allocator settings not checked"),
               env_checks.tokenizers_parallelism()]
    backend_checks = backends.get(backend).check(spec)  # the platform's limits, as the backend knows them (and its stack)
    checks += backend_checks
    if not any(check.name == "limits" for check in backend_checks):
        checks.append(Check(name="limits", status="ok", summary=f"within --backend {backend}'s limits"))
    checks, unknown = _apply_waivers(checks, waive)
    return PreflightResult(backend=backend, checks=checks, hardware=target, model=info, token_stats=stats, estimate=estimate,
                  recommendation=recommendation, unknown_waivers=unknown)


def _tokens(spec: JobSpec, splits: list[data_checks.Split], info: ModelInfo) -> tuple[Check, dict[str, Any] | None]:
    train = splits[0]
    if train.problems or info.config is None:
        return Check(name="data.tokens", status="ok", summary="token lengths not counted: fix the data and model problems above first"), None
    try:
        tokenizer = model_check.load_tokenizer(spec.config)
    except ImportError as exc:
        return Check(name="data.tokens", status="warning", summary=f"token lengths not counted: the training libraries are not installed here ({exc})",
                     fix="run preflight in the stack's environment (e.g. .venv/bin/lockstep preflight) to count them"), None
    except Exception as exc:  # a tokenizer that cannot load here will not load in training either
        return Check(name="data.tokens", status="error", summary=f"the tokenizer of {spec.config.model.name_or_path} does not load: {type(exc).__name__}: {exc}",
                     fix="check model.name_or_path and model.revision (and trust_remote_code for custom tokenizers)"), None
    positions = info.config.get("max_position_embeddings")
    return data_checks.check_tokens(train, tokenizer, spec.config.train.max_seq_len, positions if isinstance(positions, int) else None)


def _hardware(config: Any, backend: str, profile_name: str | None) -> tuple[Hardware | None, list[Check]]:
    """The hardware to plan for: a named profile, else the GPU a remote backend declares, else this machine."""
    res = config.resources
    devices = max(1, res.gpus_per_node)
    if profile_name:
        try:
            chosen = hardware.profile(profile_name, devices)
        except KeyError:
            return None, [Check(name="hardware", status="error", summary=f"unknown hardware profile {profile_name!r}",
                                fix=f"use one of {', '.join(hardware.profile_names())} (runner/tables/hardware_profiles.toml)")]
        return chosen, [Check(name="hardware", status="ok", summary=f"planning for {chosen.describe()}")]
    if backend in ("slurm", "modal"):
        return _declared(res, backend, devices)
    detected = hardware.detect()
    checks = [Check(name="hardware", status="ok", summary=f"this machine: {detected.describe()}")]
    torch_view = detected.details.get("torch", {})
    if detected.accelerator == "cuda" and backend == "local" and torch_view.get("installed") and not torch_view.get("cuda_available"):
        checks.append(Check(name="hardware.cuda", status="error",
                            summary=f"nvidia-smi lists {detected.devices} GPU(s), but torch {torch_view.get('version')} cannot use them "
                                    f"(CUDA build: {torch_view.get('cuda_build') or 'none, a CPU-only wheel'})",
                            fix="install a CUDA stack's environment (python -m runner.stacks.install cu121-torch251-pypi VENV) or check the driver"))
    if res.gpus_per_node > (detected.devices if detected.accelerator == "cuda" else 0):
        checks.append(Check(name="hardware.gpus", status="error",
                            summary=f"resources.gpus_per_node={res.gpus_per_node}, but this machine has "
                                    f"{detected.devices if detected.accelerator == 'cuda' else 'no'} CUDA GPU(s)",
                            fix="set resources.gpus_per_node to what is here, or run on --backend slurm/modal"))
    return detected, checks


def _declared(res: Any, backend: str, devices: int) -> tuple[Hardware | None, list[Check]]:
    if res.gpu_type:
        name = hardware.resolve_profile_name(res.gpu_type)
        if name is None:
            return None, [Check(name="hardware", status="warning", summary=f"no hardware profile for resources.gpu_type={res.gpu_type}: memory not checked",
                                fix=f"pass --hardware with one of {', '.join(hardware.profile_names())}")]
        chosen = hardware.profile(name, devices)
        note = " (a plain A100 may have 40 or 80 GB; this plans for 40)" if name == "A100-40GB" and res.gpu_type.upper() == "A100" else ""
        return chosen, [Check(name="hardware", status="ok", summary=f"--backend {backend} asks for {chosen.describe()}{note}")]
    if res.gpus_per_node:
        return None, [Check(name="hardware", status="warning", summary=f"{res.gpus_per_node} GPU(s) of an undeclared type: memory not checked",
                            fix="set resources.gpu_type (e.g. H100, A100-80GB, L4) or pass --hardware")]
    return None, [Check(name="hardware", status="ok", summary=f"--backend {backend} runs on CPUs; their memory is the scheduler's to give")]


def _memory(spec: JobSpec, info: ModelInfo, target: Hardware | None, stats: dict[str, Any] | None
            ) -> tuple[dict[str, float] | None, Recommendation | None, list[Check]]:
    config = spec.config
    if info.shape is None or target is None:
        return None, None, [Check(name="memory", status="ok", summary="not estimated (model shape or hardware unknown)")]
    configured = estimate_for(config, info.shape, Settings.of(config), target, info.prequantized, stats["max"] if stats else None)
    advice = recommend(config, info.shape, target, stats, info.prequantized)
    parts = configured.as_gib()
    text = (f"estimated {parts['total']:.2f} GiB per process of {target.budget_bytes / GIB:.1f} GiB usable "
            f"(weights {parts['weights']:.2f}, adapter+gradients+optimizer {parts['lora'] + parts['gradients'] + parts['optimizer']:.2f}, "
            f"activations {parts['activations']:.2f}, logits {parts['logits']:.2f}, runtime {parts['overhead']:.2f})")
    changes = ", ".join(f"{key.removeprefix('train.')} {value}" for key, (_, value) in advice.changes(config).items())
    if configured.total <= target.budget_bytes:
        return parts, advice, [Check(name="memory", status="ok", summary=text)]
    fix = (f"use the recommended settings ({changes}): lockstep preflight CONFIG --apply" if advice.fits else advice.reason)
    return parts, advice, [Check(name="memory", status="error", summary=f"does not fit: {text}", fix=fix)]


def _disk(spec: JobSpec, backend: str, info: ModelInfo) -> Check:
    if backend == "modal":
        return Check(name="disk", status="ok", summary=f"checkpoints go to the Modal volume {spec.config.modal.volume}: not checked here")
    download = info.weights_bytes if info.to_download and backend == "local" and info.weights_bytes else 0
    return env_checks.disk(spec.run_dir, info.shape, spec.config, download)


def _torch_version(config: Any, backend: str) -> str | None:
    from runner.stacks import venv as stack_venv

    if backend == "local" and stack_venv.target(config) is None:
        try:
            return importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            return None
    from runner.stacks import environment

    try:
        stack = stacks.get(stack_venv.target(config) or environment.container_stack(config.stack))
        return stacks.pins(stack.lock_file.read_text()).get("torch", [None])[0]
    except (OSError, LockstepError):  # no lock: the dependency check says so
        return None


def _apply_waivers(checks: list[Check], waive: Sequence[str]) -> tuple[list[Check], list[str]]:
    names = {check.name for check in checks} - UNWAIVABLE
    unknown = [name for name in waive if not any(_covers(name, known) for known in names)]
    waived = [replace(c, waived=c.status == "error" and c.name not in UNWAIVABLE and any(_covers(w, c.name) for w in waive)) for c in checks]
    return waived, unknown


def _covers(waiver: str, name: str) -> bool:
    """`data` waives data.train, data.tokens...; `data.train` waives only itself."""
    return name == waiver or name.startswith(waiver + ".")
