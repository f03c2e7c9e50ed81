"""Append-only logs that survive a torn or damaged line: read around it, report where it is, never glue onto it."""

from __future__ import annotations

import json

from runner.training import metrics
from runner.util import jsonl


def test_a_damaged_middle_line_and_a_torn_last_line_are_skipped_and_located(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "cut\n\n{"a": 3}\n[1, 2]\n{"a": 4')
    lines = jsonl.read(path)
    assert [r["a"] for r in lines.records] == [1, 3]
    assert lines.damaged == [2, 5] and lines.torn
    assert lines.where(path) == [f"{path}:2", f"{path}:5", f"{path}:6 (cut short)"]
    assert jsonl.count_lines(path) == 6


def test_append_after_a_torn_line_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / "attempts.jsonl"
    path.write_text('{"attempt": 1}\n{"attempt": 2, "host"')  # a crash in the middle of the second append
    jsonl.append(path, {"attempt": 3})
    assert path.read_text().splitlines()[1:] == ['{"attempt": 2, "host"', '{"attempt": 3}']
    lines = jsonl.read(path)
    assert [r["attempt"] for r in lines.records] == [1, 3] and lines.damaged == [2] and not lines.torn


def test_metrics_rows_survive_a_damaged_line_and_resume_drops_it_with_the_rows_after_the_checkpoint(tmp_path):
    rows = [{"step": step, "loss": 1.0 / step} for step in range(1, 6)]
    text = [json.dumps(row) + "\n" for row in rows]
    text[2] = "\x00\x00garbage\n"  # step 3's row, damaged on disk
    (tmp_path / metrics.METRICS_FILE).write_text("".join(text) + '{"step": 6, "lo')
    assert [r["step"] for r in metrics.read(tmp_path)] == [1, 2, 4, 5]
    dropped, damaged = metrics.truncate_after(tmp_path, 4)
    assert dropped == 1 and damaged == [f"{tmp_path / metrics.METRICS_FILE}:3", f"{tmp_path / metrics.METRICS_FILE}:6 (cut short)"]
    assert [r["step"] for r in metrics.read(tmp_path)] == [1, 2, 4]
    assert metrics.truncate_after(tmp_path, 4) == (0, [])  # the file is clean now
