"""The run config: frozen dataclasses, loaded from YAML plus `section.key=value` overrides.

Every problem is collected and reported at once (unknown keys list the valid ones), so a user
fixes a config in one pass instead of one error per attempt.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from runner import PACKAGE_DIR
from runner.config import placement
from runner.config.placement import DistributedConfig, ModalConfig, ResourcesConfig, SlurmConfig
from runner.errors import ConfigError

BUILTIN_PREFIX = "builtin:"
# The stop signals a run checkpoints and exits on (runner.training.signals installs them). SIGUSR1 only on
# request: NCCL uses it; Slurm's preemption notice is sent as SIGUSR2 instead.
DEFAULT_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR2")
ALLOWED_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP")

DataFormat = Literal["auto", "text", "prompt_completion", "messages"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Quantization = Literal["none", "4bit"]
EngineName = Literal["auto", "hf", "unsloth", "mlx"]


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name_or_path: str  # a local directory, a hub id, a .gguf file, or builtin:NAME
    gguf_file: str | None = None  # a .gguf file inside the directory name_or_path (the same as naming the file itself)
    revision: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    train: str  # JSONL file (or builtin:demo/train.jsonl)
    valid: str | None = None
    format: DataFormat = "auto"


@dataclass(frozen=True, kw_only=True)
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("all-linear",)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: float = 1.0  # ignored when max_steps is set
    max_steps: int | None = None
    per_device_batch_size: int = 4
    gradient_accumulation: int = 1
    learning_rate: float = 2e-4
    scheduler: Scheduler = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_seq_len: int = 2048
    seed: int = 42
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    eval_every_percent: float = 10.0
    log_every_steps: int = 1
    deterministic: bool = False


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    every_percent: float = 10.0
    every_minutes: float | None = None
    keep_last: int = 3
    signals: tuple[str, ...] = DEFAULT_SIGNALS  # SIGUSR1 only on request: NCCL uses it


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    """Experiment trackers that also receive the run's metrics (metrics.jsonl is always written)."""

    tensorboard: bool = False  # event files in RUN/tensorboard; written by lockstep itself, no package needed
    wandb: bool = False  # Weights & Biases: needs the wandb package in the run's stack, and WANDB_API_KEY or WANDB_MODE=offline
    mlflow: bool = False  # MLflow: needs mlflow (or mlflow-skinny); MLFLOW_TRACKING_URI says where (default ./mlruns)
    project: str = "lockstep"  # the W&B project and the MLflow experiment
    run_name: str | None = None  # default: the run directory's name


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    model: ModelConfig
    data: DataConfig
    lora: LoraConfig = field(default_factory=LoraConfig)
    quantization: Quantization = "none"
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    engine: EngineName = "auto"
    stack: str | None = None  # the locked environment container backends run in (lockfiles/stacks.toml)
    output_dir: str
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    modal: ModalConfig = field(default_factory=ModalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def sha256(self) -> str:
        """Hash of the resolved config; equal configs give equal hashes."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# Range checks: (section, key) -> (predicate, what the value must be).
_RANGES: dict[tuple[str, str], tuple[typing.Callable[[Any], bool], str]] = {
    ("lora", "r"): (lambda v: v >= 1, "at least 1"),
    ("lora", "alpha"): (lambda v: v >= 1, "at least 1"),
    ("lora", "dropout"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train", "epochs"): (lambda v: v > 0, "greater than 0"),
    ("train", "max_steps"): (lambda v: v is None or v >= 1, "at least 1"),
    ("train", "per_device_batch_size"): (lambda v: v >= 1, "at least 1"),
    ("train", "gradient_accumulation"): (lambda v: v >= 1, "at least 1"),
    ("train", "learning_rate"): (lambda v: 0 < v < 1, "in (0, 1)"),
    ("train", "warmup_ratio"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train", "weight_decay"): (lambda v: v >= 0, "at least 0"),
    ("train", "max_grad_norm"): (lambda v: v > 0, "greater than 0"),
    ("train", "max_seq_len"): (lambda v: v >= 8, "at least 8"),
    ("train", "eval_every_percent"): (lambda v: 0 < v <= 100, "in (0, 100]"),
    ("train", "log_every_steps"): (lambda v: v >= 1, "at least 1"),
    ("checkpoint", "every_percent"): (lambda v: 0 < v <= 100, "in (0, 100]"),
    ("checkpoint", "every_minutes"): (lambda v: v is None or v > 0, "greater than 0"),
    ("checkpoint", "keep_last"): (lambda v: v >= 1, "at least 1"),
    ("lora", "target_modules"): (lambda v: len(v) > 0, "at least one module name (or all-linear)"),
    ("checkpoint", "signals"): (lambda v: v and set(v) <= set(ALLOWED_SIGNALS), f"names from {', '.join(ALLOWED_SIGNALS)}"),
    **placement.RANGES,
}

# Keys whose change cannot alter the training trajectory: a run may resume across them.
RESUME_SAFE_KEYS = frozenset(
    {"output_dir", "train.log_every_steps", "checkpoint.every_percent", "checkpoint.every_minutes", "checkpoint.keep_last", "checkpoint.signals"}
)


def resume_safe(key: str) -> bool:
    """Whether a run may continue after `key` (a dotted name) changed."""
    return key in RESUME_SAFE_KEYS or key.startswith("tracking.") or placement.resume_safe(key)


def load(path: str | Path, overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Read a YAML config, apply `section.key=value` overrides, validate; raise ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror}"], source=str(path)) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source=str(path)) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["the top level must be a mapping of sections"], source=str(path))
    problems: list[str] = []
    apply_overrides(raw, overrides, problems)
    expand_home(raw)
    config = from_dict(raw, problems)
    if config is not None:
        problems += _check_paths(config)
    if problems or config is None:
        raise ConfigError(problems, source=str(path))
    return config


def apply_overrides(raw: dict[str, Any], overrides: typing.Sequence[str], problems: list[str]) -> None:
    """Set `a.b=value` items into `raw` in place; the value is parsed as a YAML scalar."""
    for item in overrides:
        key, sep, value_text = item.partition("=")
        if not sep or not key:
            problems.append(f"--set {item!r}: expected section.key=value, e.g. train.learning_rate=1e-4")
            continue
        try:
            value = yaml.safe_load(value_text) if value_text else ""
        except yaml.YAMLError:
            value = value_text
        blocked = set_dotted(raw, key, value)
        if blocked:
            problems.append(f"--set {item!r}: '{blocked}' is not a section")


# Keys that name files or directories on the machine that reads the config: a leading ~ is the user's home there.
PATH_KEYS = ("output_dir", "data.train", "data.valid", "model.name_or_path", "slurm.image", "slurm.python", "slurm.binds")


def expand_home(raw: dict[str, Any]) -> None:
    """Expand a leading ~ in every path key, in place, once, so that every reader (preflight, the backends,
    the job, a requeued job reading the snapshot) sees the same absolute path."""
    for key in PATH_KEYS:
        *sections, last = key.split(".")
        node: Any = raw
        for part in sections:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            continue
        value = node[last]
        if isinstance(value, str):
            node[last] = _expand(value)
        elif isinstance(value, list):
            node[last] = [_expand(item) if isinstance(item, str) else item for item in value]


def _expand(path: str) -> str:
    return str(Path(path).expanduser()) if path.startswith("~") else path


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> str | None:
    """Set `a.b` to `value` in `raw`, making sections as needed; returns the part that is not a section, if any."""
    node = raw
    *sections, last = key.split(".")
    for part in sections:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return part
        node = child
    node[last] = value
    return None


def from_dict(raw: dict[str, Any], problems: list[str]) -> RunConfig | None:
    """Build a RunConfig from plain data, appending every problem to `problems`."""
    return _build(RunConfig, raw, "", problems)


def _build(cls: type, raw: Any, prefix: str, problems: list[str]) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping of keys, got {_describe(raw)}")
        return None
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            problems.append(_unknown_key(prefix, str(key), names))
    values: dict[str, Any] = {}
    ok = True
    for f in dataclasses.fields(cls):
        full = f"{prefix}{f.name}"
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{full}: required, but missing")
                ok = False
            continue
        value = _coerce(raw[f.name], hints[f.name], full, problems)
        if value is _INVALID:
            ok = False
            continue
        section, _, key = full.rpartition(".")
        check = _RANGES.get((section, key))
        if check and value is not None and not check[0](value):
            problems.append(f"{full}: must be {check[1]}, got {value!r}")
            ok = False
            continue
        values[f.name] = value
    return cls(**values) if ok else None


_INVALID = object()


def _coerce(value: Any, hint: Any, name: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        built = _build(hint, value, f"{name}.", problems)
        return _INVALID if built is None else built
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, name, problems)
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(str(a) for a in args)
        problems.append(f"{name}: must be one of {choices}; got {value!r}")
        return _INVALID
    if origin is tuple:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list) and all(isinstance(i, str) and i for i in items):
            return tuple(items)
        problems.append(f"{name}: expected a text or a list of texts, got {_describe(value)}")
        return _INVALID
    if origin is dict:
        scalars = (str, int, float)
        if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, scalars) and not isinstance(v, bool) for k, v in value.items()):
            return {k: str(v) for k, v in value.items()}
        problems.append(f"{name}: expected a mapping of NAME: value (quote true/false), got {_describe(value)}")
        return _INVALID
    if hint is placement.Duration:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return f"{value}s"
        if isinstance(value, str) and value:
            return value
        problems.append(f"{name}: expected a duration, {placement.TIME_LIMIT_EXAMPLES}; got {_describe(value)}")
        return _INVALID
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{name}: expected true or false, got {_describe(value)}")
        return _INVALID
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{name}: expected a whole number, got {_describe(value)}")
        return _INVALID
    if hint is float:
        # YAML 1.1 reads "2e-4" (no dot) as a string, so accept numeric strings here.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        problems.append(f"{name}: expected a number (e.g. 2e-4), got {_describe(value)}")
        return _INVALID
    if hint is str:
        if isinstance(value, str) and value:
            return value
        problems.append(f"{name}: expected a non-empty string, got {_describe(value)}")
        return _INVALID
    raise TypeError(f"config field {name} has unsupported type {hint!r}")  # a bug in this module


def _unknown_key(prefix: str, key: str, valid: list[str]) -> str:
    where = prefix.rstrip(".") or "the top level"
    message = f"{prefix}{key}: unknown key in {where}"
    close = difflib.get_close_matches(key, valid, n=1)
    if close:
        message += f"; did you mean '{close[0]}'?"
    return message + f" Valid keys: {', '.join(valid)}"


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"the text {value!r}"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _check_paths(config: RunConfig) -> list[str]:
    """Local input files must exist before anything is written."""
    problems = []
    for name, value in (("data.train", config.data.train), ("data.valid", config.data.valid)):
        if value is None:
            continue
        if value.startswith(BUILTIN_PREFIX):
            if not builtin_path(value).is_file():
                problems.append(f"{name}: no built-in file {value!r}")
        elif problem := data_file_problem(Path(value)):  # a relative path's problem names where it was looked for
            problems.append(f"{name}: {problem}")
    return problems + _model_path_problems(config.model)


def _model_path_problems(model: ModelConfig) -> list[str]:
    name = model.name_or_path
    if name.startswith(BUILTIN_PREFIX):
        from runner.demo import BUILTIN_MODELS

        if name not in BUILTIN_MODELS:
            return [f"model.name_or_path: unknown built-in model {name!r}; known: {', '.join(BUILTIN_MODELS)}"]
        return ["model.gguf_file: a built-in model has no GGUF file to choose; remove model.gguf_file"] if model.gguf_file else []
    path = Path(name).expanduser()
    if model.gguf_file is not None:
        if not model.gguf_file.lower().endswith(".gguf"):
            return [f"model.gguf_file: {model.gguf_file!r} is not a .gguf file name"]
        if not path.is_dir():
            return [f"model.name_or_path: model.gguf_file needs a local directory here, and {name} is none"]
        if not (path / model.gguf_file).is_file():
            inside = sorted(file.name for file in path.glob("*.gguf"))
            return [f"model.gguf_file: no {model.gguf_file} in {name}" + (f"; it holds {_listed(inside)}" if inside else "")]
        return []
    if name.lower().endswith(".gguf"):
        return [] if path.is_file() else [f"model.name_or_path: GGUF file not found: {name}"]
    if name.startswith((".", "/", "~")) and not path.is_dir():
        return [f"model.name_or_path: directory not found: {name}"]
    return []


def data_file_problem(path: Path) -> str | None:
    """Why `path` is no data file at all (missing, a directory), or None."""
    if path.is_dir():
        inside = sorted(str(file.relative_to(path)) for file in path.glob("*.jsonl"))
        hint = f"; it holds {_listed(inside)}: name one of them" if inside else "; name a .jsonl file"
        return f"{path}: is a directory, not a JSON Lines file{hint}"
    if not path.exists():
        resolved = path.resolve()
        return f"{path}: does not exist" + (f" (looked for {resolved})" if str(resolved) != str(path) else "")
    return None


def _listed(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the leaf values that differ between two config dicts."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


def builtin_path(ref: str) -> Path:
    """builtin:demo/train.jsonl -> the file shipped inside the runner package."""
    return PACKAGE_DIR / "demo" / "data" / ref[len(BUILTIN_PREFIX) :].removeprefix("demo/")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
