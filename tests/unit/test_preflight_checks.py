"""Preflight's parts: hardware profiles and detection parsing, the allocator variable per torch
release, data checks with file:line, waivers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import allocator, data_checks, env_checks, hardware, preflight
from runner import config as config_module
from runner.problems import Check

GIB = 2**30


def demo_config(tmp_path: Path, train: str, valid: str | None = None, *overrides: str) -> config_module.RunConfig:
    path = tmp_path / "run.yaml"
    path.write_text(f"model: {{name_or_path: 'builtin:tiny-llama'}}\ndata: {{train: '{train}'" + (f", valid: '{valid}'" if valid else "")
                    + f"}}\noutput_dir: '{tmp_path / 'run'}'\n")
    return config_module.load(path, overrides)


def write_jsonl(path: Path, lines: list) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def test_profiles_by_name_and_gpu_type_alias():
    assert hardware.profile("h100").name == "H100-80GB" and hardware.profile("H100-80GB").memory_bytes == 81559 * 2**20
    assert hardware.resolve_profile_name("A100") == "A100-40GB" and hardware.resolve_profile_name("a100-80gb") == "A100-80GB"
    assert hardware.profile("L4").bf16 and not hardware.profile("T4").bf16
    with pytest.raises(KeyError):
        hardware.profile("TPU-v5")


def test_usable_memory_per_accelerator():
    assert hardware.profile("H100-80GB").budget_bytes == int(81559 * 2**20 * 0.92)
    m1 = hardware.profile("M1-8GB")  # Metal wires about 2/3 of unified memory up to 36 GB, 3/4 above
    assert m1.budget_bytes == int(8 * GIB * 0.66) and hardware.profile("M3-Max-64GB").budget_bytes == int(64 * GIB * 0.75)


def test_nvidia_smi_and_meminfo_parsing():
    gpus = hardware.parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81559, 550.54.15, 9.0\nTesla T4, 15360, 535.104.05, 7.5\n")
    assert gpus == [{"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "driver": "550.54.15", "compute_capability": 9.0},
                    {"name": "Tesla T4", "memory_mib": 15360, "driver": "535.104.05", "compute_capability": 7.5}]
    info = hardware.parse_meminfo("MemTotal:       24576000 kB\nMemAvailable:   20000000 kB\nHugePages_Total:       0\n")
    assert info == {"MemTotal": 24576000 * 1024, "MemAvailable": 20000000 * 1024}


def test_this_machine_is_detected():
    here = hardware.detect()
    assert here.cpu_cores and here.cpu_cores >= 1 and 0 < here.memory_bytes <= (here.ram_bytes or 0)


@pytest.mark.parametrize("torch_version, env, status, name", [
    ("2.5.1+cu121", {}, "ok", "the job sets PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"),
    ("2.13.0", {}, "ok", "the job sets PYTORCH_ALLOC_CONF=expandable_segments:True"),
    ("2.5.1", {"PYTORCH_ALLOC_CONF": "expandable_segments:True"}, "warning", "set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"),
    ("2.9.1", {"PYTORCH_ALLOC_CONF": "expandable_segments:True"}, "warning", "ignores its expandable_segments on CUDA"),
    ("2.9.1", {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}, "ok", "PYTORCH_CUDA_ALLOC_CONF"),
    ("2.11.0", {"PYTORCH_ALLOC_CONF": "expandable_segments:True"}, "ok", "PYTORCH_ALLOC_CONF"),
    ("2.11.0", {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}, "ok", "deprecated alias"),
    ("2.11.0", {"PYTORCH_ALLOC_CONF": "max_split_size_mb:128"}, "warning", "without expandable segments"),
])
def test_allocator_variable_follows_the_torch_release(monkeypatch, torch_version, env, status, name):
    for variable in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"):
        monkeypatch.delenv(variable, raising=False)
    check = env_checks.allocator(hardware.profile("H100"), torch_version, env)  # as the config's distributed.env
    assert check.status == status and name in check.summary + check.fix


def test_the_job_sets_the_name_its_torch_reads_unless_the_user_did():
    import importlib.metadata

    environ: dict[str, str] = {}
    name = allocator.set_default(environ)
    assert name == allocator.variable_for(importlib.metadata.version("torch")) and environ == {name: "expandable_segments:True"}
    mine = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}
    assert allocator.set_default(mine) is None and mine == {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}


def test_allocator_does_not_apply_off_cuda():
    assert env_checks.allocator(hardware.profile("M2-16GB"), "2.5.1", {}).status == "ok"


def test_broken_data_is_reported_with_file_and_line(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "fine"}, "{broken", {"prompt": "no text field"}, {"text": 7}])
    (check,) = [c for c in data_checks.check_splits(data_checks.read_splits(demo_config(tmp_path, train))) if c.name == "data.train"]
    assert check.status == "error"
    assert f"{train}:2: not valid JSON" in check.summary
    assert f"{train}:3: missing field(s) text" in check.summary and f"{train}:4: 'text' must be a string" in check.summary


def test_empty_file_is_an_error(tmp_path):
    train = write_jsonl(tmp_path / "empty.jsonl", [])
    (check,) = data_checks.check_splits(data_checks.read_splits(demo_config(tmp_path, train)))
    assert check.status == "error" and f"{train}:1: the file is empty" in check.summary


def test_duplicates_overlap_and_empty_rows_are_warnings(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}, {"text": "b"}, {"text": "a"}, {"text": "  "}])
    valid = write_jsonl(tmp_path / "v.jsonl", [{"text": "b"}, {"text": "c"}])
    checks = {c.name: c for c in data_checks.check_splits(data_checks.read_splits(demo_config(tmp_path, train, valid))) if c.status != "ok"}
    assert checks["data.empty"].status == "warning" and "line(s) 4" in checks["data.empty"].summary
    assert checks["data.duplicates"].status == "warning" and "3 (= 1)" in checks["data.duplicates"].summary
    assert checks["data.overlap"].status == "warning" and "1 of 2 validation row(s)" in checks["data.overlap"].summary


def test_token_lengths_and_truncation_match_training(tmp_path, demo_tokenizer):
    from runner import data

    rows = [{"text": "word " * n} for n in (5, 10, 200)]
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    (split,) = data_checks.read_splits(demo_config(tmp_path, train))
    check, stats = data_checks.check_tokens(split, demo_tokenizer, max_seq_len=64)
    lengths = [len(ids) for ids in data.tokenize(split.rows, "text", demo_tokenizer, 10**9, train).input_ids]
    assert stats["max"] == max(lengths) > 64 and stats["truncated_rows"] == 1 and stats["truncated_share"] == round(1 / 3, 4)
    assert check.status == "warning" and "raise train.max_seq_len" in check.fix
    assert data.tokenize(split.rows, "text", demo_tokenizer, 64, train).truncated == stats["truncated_rows"]


def test_waivers_unblock_only_what_they_name():
    checks = [Check(name="data.train", status="error", summary="x"), Check(name="memory", status="error", summary="y"),
              Check(name="limits", status="error", summary="z")]
    waived, unknown = preflight._apply_waivers(checks, ["data", "limits", "typo"])
    assert [c.blocks for c in waived] == [False, True, True]  # platform limits cannot be waived
    assert unknown == ["limits", "typo"]
