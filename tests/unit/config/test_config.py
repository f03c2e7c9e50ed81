"""Config loading and validation: every error path, all problems reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runner import config as cfg
from runner.cli import main as cli_main
from runner.errors import ConfigError
from tests.helpers import DEMO_CONFIG

MINIMAL = {"model": {"name_or_path": "builtin:tiny-llama"}, "data": {"train": "builtin:demo/train.jsonl"}, "output_dir": "out"}


def write(tmp_path: Path, data: object, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def problems_of(path: Path, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cfg.load(path, overrides)
    return info.value.problems


def test_demo_config_loads_with_defaults():
    config = cfg.load(DEMO_CONFIG)
    assert config.model.name_or_path == "builtin:tiny-llama"
    assert config.checkpoint.every_percent == 10 and config.checkpoint.keep_last == 3
    assert config.lora.target_modules == ("all-linear",)
    assert config.train.learning_rate == 6e-3


def test_config_is_frozen(tmp_path):
    config = cfg.load(write(tmp_path, MINIMAL))
    with pytest.raises(AttributeError):
        config.train.seed = 1  # type: ignore[misc]


def test_overrides_are_parsed_as_yaml_scalars(tmp_path):
    config = cfg.load(
        write(tmp_path, MINIMAL),
        ["train.learning_rate=1e-4", "train.max_steps=7", "train.gradient_checkpointing=true", "lora.target_modules=[q_proj, v_proj]"],
    )
    assert config.train.learning_rate == 1e-4
    assert config.train.max_steps == 7
    assert config.train.gradient_checkpointing is True
    assert config.lora.target_modules == ("q_proj", "v_proj")


def test_hash_is_stable_and_sensitive(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert cfg.load(path).sha256() == cfg.load(path).sha256()
    assert cfg.load(path).sha256() != cfg.load(path, ["train.seed=1"]).sha256()


def test_learning_rate_text_is_rejected(tmp_path):
    (problem,) = problems_of(write(tmp_path, MINIMAL), ("train.learning_rate=abc",))
    assert problem.startswith("train.learning_rate:") and "expected a number" in problem and "'abc'" in problem


def test_unknown_keys_list_valid_ones_and_suggest(tmp_path):
    data = {**MINIMAL, "train": {"learnig_rate": 0.1}, "extra_section": 1}
    problems = problems_of(write(tmp_path, data))
    nested = next(p for p in problems if p.startswith("train.learnig_rate"))
    assert "did you mean 'learning_rate'" in nested and "Valid keys:" in nested and "per_device_batch_size" in nested
    top = next(p for p in problems if p.startswith("extra_section"))
    assert "Valid keys: model, data, lora" in top


def test_every_problem_is_reported_at_once(tmp_path):
    data = {
        "model": {},
        "data": {"train": "builtin:demo/train.jsonl", "format": "csv"},
        "lora": {"r": 0, "dropout": 1.5, "target_modules": []},
        "quantization": "8bit",
        "train": {"per_device_batch_size": 2.5, "gradient_checkpointing": "yes", "seed": "x", "epochs": -1},
        "checkpoint": {"keep_last": 0, "every_percent": 150},
        "engine": "jax",
    }
    problems = problems_of(write(tmp_path, data))
    expected = [
        "model.name_or_path: required",
        "data.format: must be one of auto, text, prompt_completion, messages",
        "lora.r: must be at least 1",
        "lora.dropout: must be in [0, 1)",
        "lora.target_modules: must be at least one module name",
        "quantization: must be one of none, 4bit",
        "train.per_device_batch_size: expected a whole number",
        "train.gradient_checkpointing: expected true or false",
        "train.seed: expected a whole number",
        "train.epochs: must be greater than 0",
        "checkpoint.keep_last: must be at least 1",
        "checkpoint.every_percent: must be in (0, 100]",
        "engine: must be one of auto, hf, unsloth, mlx",
        "output_dir: required",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("model: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("model: 3\n", "model: expected a mapping"),
    ],
)
def test_malformed_files(tmp_path, text, fragment):
    problems = problems_of(write(tmp_path, text))
    assert any(fragment in p for p in problems), problems


def test_missing_config_file(tmp_path):
    (problem,) = problems_of(tmp_path / "nope.yaml")
    assert "cannot read" in problem


def test_missing_data_and_model_paths(tmp_path):
    data = {**MINIMAL, "model": {"name_or_path": "./no-such-model"}, "data": {"train": "missing.jsonl", "valid": "builtin:demo/nope.jsonl"}}
    problems = problems_of(write(tmp_path, data))
    assert any(p.startswith("data.train: missing.jsonl: does not exist (looked for /") for p in problems)
    assert any(p.startswith("data.valid: no built-in file") for p in problems)
    assert any(p.startswith("model.name_or_path: directory not found") for p in problems)


def test_unknown_builtin_model(tmp_path):
    (problem,) = problems_of(write(tmp_path, {**MINIMAL, "model": {"name_or_path": "builtin:huge"}}))
    assert "unknown built-in model" in problem and "builtin:tiny-llama" in problem


def test_gguf_inputs_that_cannot_be_found_are_named(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "a.Q4_0.gguf").write_bytes(b"GGUF")
    cases = {
        (f"{models}/absent.gguf", None): "model.name_or_path: GGUF file not found: ",
        (str(models), "b.gguf"): f"model.gguf_file: no b.gguf in {models}; it holds a.Q4_0.gguf",
        (str(models), "b.bin"): "model.gguf_file: 'b.bin' is not a .gguf file name",
        (f"{tmp_path}/no-such-dir", "a.Q4_0.gguf"): "model.name_or_path: model.gguf_file needs a local directory",
        ("builtin:tiny-llama", "a.Q4_0.gguf"): "model.gguf_file: a built-in model has no GGUF file",
    }
    for (name, gguf_file), fragment in cases.items():
        model = {"name_or_path": name} | ({"gguf_file": gguf_file} if gguf_file else {})
        (problem,) = problems_of(write(tmp_path, {**MINIMAL, "model": model}))
        assert problem.startswith(fragment), (name, problem)
    for model in ({"name_or_path": f"{models}/a.Q4_0.gguf"}, {"name_or_path": str(models), "gguf_file": "a.Q4_0.gguf"}):
        assert cfg.load(write(tmp_path, {**MINIMAL, "model": model}), ()).model == cfg.ModelConfig(**model)


@pytest.mark.parametrize(
    "override, fragment",
    [("train.learning_rate", "expected section.key=value"), ("=3", "expected section.key=value"), ("output_dir.x=1", "'output_dir' is not a section")],
)
def test_malformed_overrides(tmp_path, override, fragment):
    problems = problems_of(write(tmp_path, MINIMAL), (override,))
    assert any(fragment in p for p in problems), problems


def test_cli_bad_value_fails_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli_main(["train", str(DEMO_CONFIG), "--set", "train.learning_rate=abc", "--set", f"output_dir={out}"])
    err = capsys.readouterr().err
    assert code == ConfigError.exit_code
    assert "train.learning_rate" in err and "expected a number" in err and "nothing was written" in err
    assert not out.exists()


def test_cli_misspelt_key_fails_and_writes_nothing(tmp_path, capsys):
    text = DEMO_CONFIG.read_text().replace("learning_rate:", "learnin_rate:").replace("output_dir: runs/demo", f"output_dir: {tmp_path / 'run'}")
    path = write(tmp_path, text)
    code = cli_main(["train", str(path)])
    err = capsys.readouterr().err
    assert code == ConfigError.exit_code
    assert "train.learnin_rate: unknown key" in err and "did you mean 'learning_rate'" in err
    assert not (tmp_path / "run").exists()


def test_check_config_prints_resolved_config(capsys):
    assert cli_main(["check-config", str(DEMO_CONFIG), "--set", "train.seed=7"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["seed"] == 7 and printed["checkpoint"]["keep_last"] == 3


def test_a_leading_tilde_is_the_home_directory_in_every_path_key(tmp_path, monkeypatch):
    """Expanded once, when the config is read: preflight, the backends and the job all see one path."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "train.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "model").mkdir()
    path = write(tmp_path, {**MINIMAL, "output_dir": "~/runs/a", "model": {"name_or_path": "~/model"},
                            "data": {"train": "~/train.jsonl", "valid": "~/train.jsonl"},
                            "slurm": {"image": "~/x.sif", "python": "~/venv/bin/python", "binds": ["~/data:/data", "/abs"]}})
    config = cfg.load(path)
    assert config.output_dir == str(tmp_path / "runs" / "a")
    assert config.data.train == config.data.valid == str(tmp_path / "train.jsonl")
    assert config.model.name_or_path == str(tmp_path / "model")
    assert (config.slurm.image, config.slurm.python) == (str(tmp_path / "x.sif"), str(tmp_path / "venv" / "bin" / "python"))
    assert config.slurm.binds == (f"{tmp_path}/data:/data", "/abs")
    assert cfg.load(path, ["output_dir=~/other"]).output_dir == str(tmp_path / "other")  # --set values too


def test_a_directory_given_as_a_data_file_is_named_with_the_files_in_it(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "hi"}\n')
    (problem,) = problems_of(write(tmp_path, {**MINIMAL, "data": {"train": str(tmp_path / "data")}}))
    assert problem == f"data.train: {tmp_path / 'data'}: is a directory, not a JSON Lines file; it holds train.jsonl: name one of them"
