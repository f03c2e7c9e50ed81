"""Ordinary mistakes get an answer, not a traceback: what is wrong, the fix, a documented exit code,
and nothing lost or written where it should not be."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import DEMO_CONFIG, REPO_ROOT, nothing_but_preflight, run_lockstep, skip_or_fail

OUTPUT_DIR_EXIT = 5


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory on a filesystem mounted read-only (root passes permission bits, not a read-only mount)."""
    mount_point = tmp_path / "read-only"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        skip_or_fail(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.parametrize("command", ["train", "preflight"])
def test_an_output_dir_on_a_read_only_filesystem_is_refused_with_the_fix(read_only_dir, command):
    result = run_lockstep(command, str(DEMO_CONFIG), "--set", f"output_dir={read_only_dir / 'run'}")
    assert result.returncode == OUTPUT_DIR_EXIT, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert f"cannot write the run directory {read_only_dir / 'run'}: Read-only file system" in output
    assert "Traceback" not in output and list(read_only_dir.iterdir()) == []
    if command == "preflight":  # the check is in the table too, where the user reads the others
        assert re.search(rf"✗ output_dir +cannot write {re.escape(str(read_only_dir))}: Read-only file system", result.stdout)


PREFLIGHT_EXIT = 12


def test_lora_targets_that_name_no_layer_are_refused_before_training(tmp_path):
    """PEFT would stop the run after loading the model, with a traceback; preflight names the model's layers."""
    run_dir = tmp_path / "run"
    result = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", "lora.target_modules=[qproj, v_proj]")
    assert result.returncode == PREFLIGHT_EXIT, result.stderr[-3000:]
    assert "'qproj' names no module of the model (did you mean 'q_proj'?)" in result.stderr
    assert "its linear layers are down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj" in result.stderr
    assert "Traceback" not in result.stderr and nothing_but_preflight(run_dir)
    fixed = run_lockstep("preflight", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", "lora.target_modules=[q_proj, v_proj]")
    assert fixed.returncode == 0 and "lora.target_modules ['q_proj', 'v_proj'] each name a layer of the model" in fixed.stdout


MODEL_EXIT = 15


def test_a_truncated_gguf_file_stops_preflight_and_then_the_job_with_the_fix_and_caches_nothing(tmp_path):
    """Preflight refuses it (12); waived, training itself stops with the model's own code (15). Nothing is cached."""
    gguf = pytest.importorskip("gguf", reason="the gguf package is part of the cpu stack")
    import numpy as np

    whole, cut, run_dir = tmp_path / "whole.gguf", tmp_path / "model.gguf", tmp_path / "run"
    writer = gguf.GGUFWriter(str(whole), "llama")
    writer.add_tensor("token_embd.weight", np.ones((64, 64), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    cut.write_bytes(whole.read_bytes()[:2000])
    cache = tmp_path / "cache"
    args = ("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", f"model.name_or_path={cut}")
    refused = run_lockstep(*args, extra_env={"LOCKSTEP_CACHE": str(cache)})
    assert refused.returncode == PREFLIGHT_EXIT, refused.stderr[-3000:]
    assert f"model: {cut}: not a complete GGUF file (2000 bytes;" in refused.stderr and "cut short" in refused.stderr
    assert "Traceback" not in refused.stderr and nothing_but_preflight(run_dir)
    waived = run_lockstep(*args, "--waive", "model", "--waive", "data", extra_env={"LOCKSTEP_CACHE": str(cache)})
    assert waived.returncode == MODEL_EXIT, waived.stderr[-3000:]
    assert "not a complete GGUF file" in waived.stderr and "Traceback" not in waived.stderr
    assert not list(cache.glob("models/gguf-*"))


DATA_EXIT = 3


def test_a_run_that_failed_before_its_first_checkpoint_starts_afresh_once_fixed(tmp_path):
    """Nothing was saved that the fixed data could make wrong: no --fresh needed, and the user is told."""
    data, run_dir = tmp_path / "train.jsonl", tmp_path / "run"
    data.write_text('{"prompt": "What is 1 + 1?"}\n')  # no completion: preflight's error, waived, then the job's
    args = ("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", f"data.train={data}", "--set", "data.valid=null",
            "--set", "train.max_steps=2")
    failed = run_lockstep(*args, "--waive", "data")
    assert failed.returncode == DATA_EXIT and "missing field(s) completion" in failed.stderr, failed.stderr[-3000:]
    data.write_text("".join(f'{{"prompt": "What is {n} + 1?", "completion": " {n + 1}."}}\n' for n in range(8)))
    fixed = run_lockstep(*args)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert (f"the run in {run_dir} has no checkpoint, so nothing to resume: starting it afresh with the changed "
            "data.train (file contents)") in fixed.stderr
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2


STACK_EXIT = 8


def test_exit_codes_are_the_readme_table_s(tmp_path):
    """An output_dir that is a file (5), the Modal demo without its CUDA lock (8: cu121-torch251 locks only where PyTorch's
    index is reachable), status of a directory that is not a run (5)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    result = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={a_file}")
    assert result.returncode == OUTPUT_DIR_EXIT and f"output_dir {a_file} exists and is not a directory" in result.stderr
    assert a_file.read_text() == "mine\n"
    modal = run_lockstep("train", str(DEMO_CONFIG), "--backend", "modal", "--dry-run", "--set", f"output_dir={tmp_path / 'm'}")
    assert modal.returncode == STACK_EXIT and "stack cu121-torch251 has no lock" in modal.stderr, modal.stderr[-3000:]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    status = run_lockstep("status", str(tmp_path / "notes"))
    assert status.returncode == OUTPUT_DIR_EXIT and "holds no lockstep run" in status.stderr


def test_version_and_help_describe_every_argument():
    from runner import __version__
    from runner.cli import build_parser

    assert run_lockstep("--version").stdout.strip() == f"lockstep {__version__}"
    subcommands = next(action for action in build_parser()._actions if action.dest == "command").choices
    for name, parser in subcommands.items():
        undescribed = [action.dest for action in parser._actions if not action.help]
        assert not undescribed, f"lockstep {name}: {undescribed} have no help text"
        assert "examples:\n  lockstep " + name in parser.format_help(), name


def test_the_terminal_shows_one_bar_a_line_per_checkpoint_and_a_short_summary(tmp_path):
    run_dir = tmp_path / "run"
    result = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", "train.max_steps=4",
                          "--set", "checkpoint.every_percent=50")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.strip() for line in re.split(r"[\r\n]", result.stderr) if line.strip()]
    assert [line for line in lines if "checkpoint saved" in line] == [f"lockstep: checkpoint saved: {run_dir}/checkpoints/step-{n:08d}"
                                                                      for n in (2, 4)]
    assert not [line for line in lines if "Loading weights" in line or "Warning" in line]  # the libraries' own noise
    summary = result.stderr[result.stderr.index("lockstep: run complete"):].splitlines()
    assert summary[0] == f"lockstep: run complete: {run_dir}" and summary[1].startswith("  4 steps in 1 attempt, ")
    assert f"  adapter: {run_dir}/adapter" in summary and any(f"lockstep generate {run_dir}" in line for line in summary)
    assert not re.search(r"\d\.\d{5,}", "\n".join(summary)), summary  # numbers rounded for reading; summary.json keeps them all


def test_installing_lockstep_prints_no_build_warnings():
    """As runner.stacks.install installs it (setuptools once warned three times of the license's old form)."""
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--dry-run", "-e", str(REPO_ROOT)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Would install lockstep" in result.stdout and "warning" not in (result.stdout + result.stderr).lower()


def test_validate_data_with_only_a_config_checks_that_config_s_data_files():
    result = run_lockstep("validate-data", "--config", str(DEMO_CONFIG))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "builtin:demo/train.jsonl: 768 rows" in result.stdout and "builtin:demo/valid.jsonl: 64 rows" in result.stdout
    assert result.stdout.splitlines()[-1] == "2 file(s): 0 failed, 0 warning(s)"
    neither = run_lockstep("validate-data")
    assert neither.returncode == 2 and "validate-data needs FILE... (JSONL data files), or --config CONFIG" in neither.stderr
