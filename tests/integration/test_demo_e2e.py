"""The embedded demo, end to end through the real `lockstep` command, in the current environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from runner.errors import PreflightError, StackError
from tests.helpers import DEMO_CONFIG, REPO_ROOT, nothing_but_preflight, run_lockstep
from tests.integration.run_checks import GENERATE_SCRIPT, assert_complete_run, assert_merge_keeps_the_outputs

pytestmark = pytest.mark.slow


def test_demo_writes_every_output_and_learns(demo_run):
    run_dir, _ = demo_run
    summary = assert_complete_run(run_dir)
    assert summary["engine"] == "hf" and summary["steps"] == 144


def test_progress_bar_shows_loss_and_eta(demo_run):
    _, result = demo_run
    assert re.search(r"train: +\d+%.*\d\d:\d\d<\d\d:\d\d.*loss=\d", result.stderr)
    assert "run complete" in result.stderr


def test_adapter_loads_and_generates(demo_run):
    run_dir, _ = demo_run
    out = subprocess.run([sys.executable, "-c", GENERATE_SCRIPT, str(run_dir)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    # The demo teaches this exact answer pattern; a working adapter reproduces it.
    assert out.stdout.strip().startswith("The capital of France is")


def test_lockstep_generate_answers_prompts_in_the_runs_format(demo_run, tmp_path):
    run_dir, _ = demo_run
    prompt = "### Instruction:\nWhat is the capital of France?\n### Response:\n"
    result = run_lockstep("generate", str(run_dir), "--prompt", prompt)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "The capital of France is Paris."
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"### Instruction:\nWhat is the capital of {c}?\n### Response:\n"}) + "\n"
                               for c in ("Chile", "Norway")))
    result = run_lockstep("generate", str(run_dir), "--file", str(prompts))
    assert result.returncode == 0, result.stderr[-3000:]
    answers = [json.loads(line)["completion"] for line in result.stdout.splitlines()]
    assert answers == ["The capital of Chile is Santiago.", "The capital of Norway is Oslo."]


def test_lockstep_merge_writes_a_model_with_the_adapters_outputs(demo_run):
    run_dir, _ = demo_run
    assert_merge_keeps_the_outputs(run_dir, run_dir / "adapter")


def test_generate_and_merge_refuse_an_unfinished_run(tmp_path):
    for args in (("generate", str(tmp_path), "--prompt", "hello"), ("merge", str(tmp_path))):
        result = run_lockstep(*args)
        assert result.returncode == 5 and "holds no finished run" in result.stderr, args
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_rerun_of_finished_run_is_a_no_op_and_fresh_moves_it_aside(tmp_path):
    run_dir = tmp_path / "short"
    args = ("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", "train.max_steps=3")
    assert run_lockstep(*args).returncode == 0
    before = (run_dir / "summary.json").read_text()

    again = run_lockstep(*args)
    assert again.returncode == 0 and "already complete" in again.stderr
    assert (run_dir / "summary.json").read_text() == before

    fresh = run_lockstep(*args, "--fresh")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    (moved,) = [p for p in tmp_path.iterdir() if p.name.startswith("short.previous-")]
    assert (moved / "summary.json").read_text() == before
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 3


def test_cpu_run_refuses_gpu_precision_before_writing(tmp_path):
    run_dir = tmp_path / "bf16"
    result = run_lockstep("train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--set", "train.precision=bf16")
    if "CUDA" not in result.stderr:
        pytest.skip("a CUDA GPU is visible: bf16 is valid here")
    assert result.returncode == PreflightError.exit_code and "✗ engine" in result.stderr and "train.precision=fp32" in result.stderr
    assert nothing_but_preflight(run_dir)


def test_manifest_records_the_stack_and_that_nothing_drifted(demo_run):
    run_dir, _ = demo_run
    recorded = json.loads((run_dir / "manifest.json").read_text())
    # `make test` builds this environment from the cpu lock (python -m runner.stacks.install cpu .venv).
    assert recorded["stack"] == "cpu" and len(recorded["lock_sha256"]) == 64
    assert recorded["drift"] == {"clean": True, "missing": [], "changed": {}, "extra": []}


def test_strict_env_refuses_drift_before_writing(tmp_path):
    run_dir = tmp_path / "strict"
    env = dict(os.environ, LOCKSTEP_STACK="mlx")  # this environment is not the mlx stack
    result = subprocess.run(
        [sys.executable, "-m", "runner", "train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}", "--strict-env"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
    )
    assert result.returncode == PreflightError.exit_code, result.stderr[-2000:]
    assert "✗ drift" in result.stderr and "this environment differs from the lock of stack mlx" in result.stderr
    assert "mlx-cpu missing" in result.stderr
    assert nothing_but_preflight(run_dir)


def test_an_environment_of_a_stack_without_a_lock_is_refused(tmp_path):
    run_dir = tmp_path / "unlocked"
    env = dict(os.environ, LOCKSTEP_STACK="cu121-torch251")
    result = subprocess.run(
        [sys.executable, "-m", "runner", "train", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
    )
    assert result.returncode == StackError.exit_code, result.stderr[-2000:]
    assert "✗ lock" in result.stderr and "run `nox -s lock -- cu121-torch251`" in result.stderr and nothing_but_preflight(run_dir)


# Records each image's decoded width once the page has loaded; added to a copy only (the report itself runs no script).
IMAGE_WIDTHS_PROBE = ('<script>addEventListener("load", () => { const out = document.createElement("pre"); out.id = "image-widths"; '
                      "out.textContent = JSON.stringify([...document.images].map(i => i.naturalWidth)); document.body.append(out); });"
                      "</script>")


def test_lockstep_report_renders_in_a_headless_browser(demo_run, tmp_path):
    import shutil

    import numpy
    from PIL import Image  # matplotlib depends on Pillow, so it is there wherever reports are drawn

    from tests.helpers import skip_or_fail

    run_dir, _ = demo_run
    result = run_lockstep("report", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    page = run_dir / "report.html"
    assert result.stdout.strip() == str(page)
    browser = shutil.which("chromium-headless-shell")
    if browser is None:
        skip_or_fail("chromium-headless-shell is not installed (apt-get install chromium-headless-shell)")
    flags = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}")

    # The copy drops the report's Content-Security-Policy, which would block the probe as it blocks any script.
    probe = tmp_path / "probe.html"
    probe.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page.read_text())
                     .replace("</body>", IMAGE_WIDTHS_PROBE + "</body>"))
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"<h1>{run_dir.name}</h1>" in dom.stdout and f"<td>{summary['final_eval_loss']:.4f}</td>" in dom.stdout
    widths = json.loads(re.search(r'<pre id="image-widths">(.*?)</pre>', dom.stdout).group(1))
    assert len(widths) == 4 and all(width > 0 for width in widths), widths

    shot = tmp_path / "report.png"
    rendered = subprocess.run([browser, *flags, "--window-size=1280,2600", f"--screenshot={shot}", page.as_uri()],
                              capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0 and shot.is_file(), rendered.stderr[-3000:]
    # Every demo curve but eval loss is drawn in matplotlib's first colour (C0, #1f77b4); scaled images blend it a little.
    pixels = numpy.asarray(Image.open(shot).convert("RGB"), dtype=int)
    line = (numpy.abs(pixels - (0x1F, 0x77, 0xB4)) <= 8).all(axis=2).sum()
    assert line > 1000, f"only {line} pixels of the plot line colour: the plots did not paint"


def test_lockstep_report_compares_runs(demo_run, tmp_path):
    import shutil

    run_dir, _ = demo_run
    # The same name under another parent: the comparison must tell them apart.
    copy = tmp_path / "copy" / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "adapter", "merged_model", ".trainer"))
    result = run_lockstep("report", str(run_dir), str(copy), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    written = tmp_path / "report-compare.html"
    assert result.stdout.strip() == "report-compare.html" and written.is_file()
    document = written.read_text()
    for label in (f"{run_dir.parent.name}/{run_dir.name}", f"copy/{run_dir.name}"):
        assert f"<th>{label}</th>" in document, label
    assert "The configs are the same." in document and "The environments are the same." in document
    assert document.count('src="data:image/png;base64,') == 4
