"""`lockstep report`: HTML reports of small run directories built here, through the real command."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest
import yaml

from runner import cli
from runner.errors import OutputDirError
from runner.job import outputs
from runner.reports import compare as compare_report
from runner.training import metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOCK = "ab" * 32


def make_run(parent: Path, name: str = "run", *, steps: int = 6, total: int | None = None, finished: bool = True,
             logged_at: float | None = None, config: dict | None = None, manifest: dict | None = None) -> Path:
    """A run directory as training leaves it: config, manifest, attempts, metrics rows (an eval every 3 steps)."""
    run_dir = parent / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"name_or_path": "builtin:tiny-llama"}, "train": {"learning_rate": 0.003, "seed": 42}, "engine": "hf",
         "output_dir": str(run_dir)} | (config or {}), sort_keys=False))
    fingerprint = {"started_at": "2026-01-02T03:04:05+00:00", "backend": "local", "host": "node-1", "python": "3.11.7",
                   "packages": {"torch": "2.5.1", "transformers": "4.46.3", "trl": "0.11.4", "peft": "0.13.2"},
                   "cuda": {"available": False, "torch_cuda": None}, "stack": "cpu", "lock_sha256": LOCK,
                   "drift": {"clean": True, "missing": [], "changed": {}}, "git": {"commit": "0123456789" * 4, "dirty": False},
                   "lockstep_version": "0.1.0", "attempt": 1, "resumed_from_step": None} | (manifest or {})
    (run_dir / "manifest.json").write_text(json.dumps(fingerprint))
    (run_dir / "attempts.jsonl").write_text(json.dumps(fingerprint) + "\n")
    start = (logged_at if logged_at is not None else time.time()) - steps
    rows = [{"step": 0, "eval_loss": 3.0, "memory_mb": 100.0}]
    for step in range(1, steps + 1):
        rows.append({"step": step, "epoch": step / 10, "loss": 3.0 - 0.3 * step, "lr": 0.001, "grad_norm": 1.0,
                     "tokens_per_s": 1000.0 + step, "memory_mb": 100.0 + step})
        if step % 3 == 0:
            rows.append({"step": step, "eval_loss": 3.0 - 0.25 * step})
    with (run_dir / metrics.METRICS_FILE).open("w") as handle:
        for index, row in enumerate(rows):
            handle.write(json.dumps({column: row.get(column) for column in metrics.COLUMNS} | {"time": start + index}) + "\n")
    if total is not None:
        metrics.write_plan(run_dir, total)
    if finished:
        outputs.write(run_dir, {"engine": "hf", "steps": steps, "wall_time_s": 12.5, "tokens_per_s": 1003.2})
    return run_dir


def lockstep_report(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["report", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def section(document: str, title: str) -> str:
    """The markup under the heading `title`, up to the next heading."""
    return document.split(f"<h2>{title}</h2>", 1)[1].split("<h2>", 1)[0]


def test_report_is_one_self_contained_file_with_every_plot(tmp_path, capsys):
    run_dir = make_run(tmp_path)
    code, out, _ = lockstep_report(capsys, run_dir)
    assert code == 0 and out.strip() == str(run_dir / "report.html")
    document = (run_dir / "report.html").read_text()
    assert "<title>lockstep report: run</title>" in document and "finished after 6 steps" in document
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)">', document)
    assert [alt for _, alt in images] == ["run: train loss and eval loss by optimizer step", "run: learning rate by optimizer step",
                                          "run: tokens/s by optimizer step", "run: peak memory by optimizer step"]
    assert all(base64.b64decode(data).startswith(PNG_SIGNATURE) for data, _ in images)
    # The embedded plots are the files in plots/, redrawn (throughput included).
    assert [base64.b64decode(data) for data, _ in images] == [(run_dir / "plots" / f"{name}.png").read_bytes() for name in outputs.PLOTS]
    # Nothing is fetched from anywhere, and the page runs no code.
    assert not re.search(r"https?://|<script|<link|src=\"(?!data:)", document, re.IGNORECASE)
    assert [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_every_value_from_the_run_directory_is_escaped(tmp_path, capsys):
    hostile = "<script>alert('x')</script> & \"quoted\""
    run_dir = make_run(tmp_path, config={"model": {"name_or_path": hostile}}, manifest={"host": "<b>node</b>"})
    assert lockstep_report(capsys, run_dir)[0] == 0
    document = (run_dir / "report.html").read_text()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;" in section(document, "Config")
    assert "&lt;b&gt;node&lt;/b&gt;" in section(document, "Environment") and "&lt;b&gt;node&lt;/b&gt;" in section(document, "Attempts")
    assert "<script" not in document and "<b>" not in document


def test_the_report_states_the_summary_and_environment(tmp_path, capsys):
    drifted = {"clean": False, "missing": ["peft"], "changed": {"torch": {"locked": "2.5.1", "installed": "2.6.0"}}}
    run_dir = make_run(tmp_path, manifest={"drift": drifted, "git": {"commit": "feedface" * 5, "dirty": True}})
    assert lockstep_report(capsys, run_dir)[0] == 0
    document = (run_dir / "report.html").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"<th>final_eval_loss</th><td>{summary['final_eval_loss']:.4f}</td>" in section(document, "Summary")
    assert "<th>wall_time_s</th><td>12.5 s</td>" in document and "<th>eval_loss_drop</th><td>50.0%</td>" in document
    environment = section(document, "Environment")
    for fact in ("<th>stack</th><td>cpu</td>", f"<th>lock sha256</th><td>{LOCK[:12]}</td>", "<th>engine</th><td>hf</td>",
                 "<th>torch</th><td>2.5.1</td>", "<th>trl</th><td>0.11.4</td>", "<th>host</th><td>node-1</td>",
                 "feedfacefeed (with uncommitted changes)", "torch 2.6.0 (locked 2.5.1); peft missing"):
        assert fact in environment, fact
    assert "<td>2026-01-02T03:04:05+00:00</td>" in section(document, "Attempts")
    assert "learning_rate: 0.003" in section(document, "Config")


def test_an_unfinished_run_says_how_far_it_got(tmp_path, capsys):
    running = make_run(tmp_path, "running", steps=5, total=20, finished=False)
    assert lockstep_report(capsys, running)[0] == 0
    document = (running / "report.html").read_text()
    assert "in progress at step 5 of 20" in document and "finished after" not in document
    assert "Summary so far" in document and not (running / "summary.json").exists()

    stalled = make_run(tmp_path, "stalled", steps=5, total=20, finished=False, logged_at=time.time() - 86_400)
    assert lockstep_report(capsys, stalled)[0] == 0
    assert "stopped at step 5 of 20 (nothing logged since" in (stalled / "report.html").read_text()


def test_a_run_from_before_plans_and_row_times_is_reported(tmp_path, capsys):
    run_dir = make_run(tmp_path, steps=4, finished=False)
    rows = [{key: value for key, value in row.items() if key != "time"} for row in metrics.read(run_dir)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert lockstep_report(capsys, run_dir)[0] == 0
    assert re.search(r"in progress at step 4 \(last logged", (run_dir / "report.html").read_text())


def test_output_puts_the_report_elsewhere(tmp_path, capsys):
    run_dir = make_run(tmp_path)
    target = tmp_path / "out dir" / "mine.html"
    target.parent.mkdir()
    code, out, _ = lockstep_report(capsys, run_dir, "--output", target)
    assert code == 0 and out.strip() == str(target) and "lockstep report: run" in target.read_text()
    assert not (run_dir / "report.html").exists()


def test_a_comparison_holds_every_run_and_what_differs(tmp_path, capsys):
    first = make_run(tmp_path / "a", "run")
    second = make_run(tmp_path / "b", "run", config={"train": {"learning_rate": 0.001, "seed": 42}},
                      manifest={"packages": {"torch": "2.6.0", "transformers": "4.46.3", "trl": "0.11.4", "peft": "0.13.2"}})
    third = make_run(tmp_path, "unfinished", steps=3, total=9, finished=False)
    target = tmp_path / "compare.html"
    code, out, _ = lockstep_report(capsys, first, second, third, "--output", target)
    assert code == 0 and out.strip() == str(target)
    document = target.read_text()
    # Two runs named alike are told apart by their parent directories.
    assert "<th></th><th>a/run</th><th>b/run</th><th>unfinished</th>" in section(document, "Summary")
    assert "in progress at step 3 of 9" in document and document.count("finished after 6 steps") == 2
    assert len(re.findall(r'<img src="data:image/png;base64,[^"]+" alt="a/run, b/run, unfinished: ', document)) == 4
    config = section(document, "Config differences")
    assert "<th>train.learning_rate</th><td>0.003</td><td>0.001</td><td>0.003</td>" in config
    assert "train.seed" not in config and "model.name_or_path" not in config
    environment = section(document, "Environment differences")
    assert "<th>torch</th><td>2.5.1</td><td>2.6.0</td><td>2.5.1</td>" in environment
    assert "<th>stack</th>" not in environment and "transformers" not in environment
    # A comparison leaves the runs' own files alone.
    assert not any((run / "report.html").exists() for run in (first, second, third))


def test_a_comparison_goes_to_the_current_directory_by_default(tmp_path, capsys, monkeypatch):
    runs = [make_run(tmp_path, name) for name in ("one", "two")]
    monkeypatch.chdir(tmp_path)
    code, out, _ = lockstep_report(capsys, *runs)
    assert code == 0 and out.strip() == "report-compare.html"
    assert "The configs are the same" not in (tmp_path / "report-compare.html").read_text()  # output_dir differs
    assert "<th>output_dir</th>" in section((tmp_path / "report-compare.html").read_text(), "Config differences")


def test_labels_grow_parent_directories_only_where_names_collide(tmp_path):
    paths = [tmp_path / "x" / "a" / "run", tmp_path / "y" / "a" / "run", tmp_path / "other", tmp_path / "other"]
    assert compare_report.labels(paths) == ["x/a/run", "y/a/run", "other #1", "other #2"]
    assert compare_report.labels([tmp_path / "one"]) == ["one"]


@pytest.mark.parametrize("case", ["missing", "a file", "no metrics", "empty metrics", "not a run", "one of several"])
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    good = make_run(tmp_path, "good")
    bad = tmp_path / "bad"
    if case == "a file":
        bad.write_text("")
    elif case in ("no metrics", "empty metrics"):
        bad = make_run(tmp_path, "bad", finished=False)
        (bad / "metrics.jsonl").unlink() if case == "no metrics" else (bad / "metrics.jsonl").write_text("")
    elif case == "not a run":
        bad.mkdir()
    before = sorted(tmp_path.rglob("*"))
    args = (good, bad) if case == "one of several" else (bad,)
    code, out, err = lockstep_report(capsys, *args)
    assert code == OutputDirError.exit_code and out == ""
    assert str(bad) in err
    expected = {"missing": "does not exist", "a file": "is not a directory", "no metrics": "has no metrics yet",
                "empty metrics": "has no metrics yet", "not a run": "holds no lockstep run", "one of several": "does not exist"}[case]
    assert expected in err, err
    if case in ("no metrics", "empty metrics"):
        assert f"lockstep train {bad / 'config.yaml'}" in err
    assert sorted(tmp_path.rglob("*")) == before  # no report, no plots, no temporary file


def test_an_output_in_a_missing_directory_is_refused_before_the_plots_are_redrawn(tmp_path, capsys):
    run_dir = make_run(tmp_path, finished=False)
    target = tmp_path / "missing" / "report.html"
    code, _, err = lockstep_report(capsys, run_dir, "--output", target)
    assert code == OutputDirError.exit_code and f"its directory {target.parent} does not exist" in err
    assert not (run_dir / "plots").exists() and not target.parent.exists()


def test_a_damaged_manifest_is_named(tmp_path, capsys):
    run_dir = make_run(tmp_path)
    (run_dir / "manifest.json").write_text("{not json")
    code, _, err = lockstep_report(capsys, run_dir)
    assert code == OutputDirError.exit_code and f"{run_dir / 'manifest.json'} is not valid JSON" in err
    assert not (run_dir / "report.html").exists()
