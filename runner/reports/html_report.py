"""`lockstep report RUN [RUN ...]`: one run as a self-contained HTML page (RUN/outputs.html), or several runs
compared in one (report-compare.html). Plots are redrawn from metrics.jsonl and embedded; the page loads nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from runner.errors import OutputDirError
from runner.job import outputs
from runner.reports import compare as compare_report
from runner.reports import record as run_record
from runner.reports.html_page import check_writable, escape, facts, image, page, plot_alt, section, table, write
from runner.reports.record import RunRecord
from runner.rundir import PLOTS_DIR, REPORT_FILE
from runner.util import console

COMPARE_FILE = "report-compare.html"
ATTEMPT_COLUMNS = ("attempt", "started", "backend", "host", "resumed from step", "stack", "git commit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", type=Path,
                        help="run directories (a config's output_dir); one gets its own report, several are compared")
    parser.add_argument("--output", "-o", type=Path, metavar="PATH",
                        help=f"where to write the HTML (default: RUN/{REPORT_FILE} for one run, ./{COMPARE_FILE} for several)")


def main(args: argparse.Namespace) -> int:
    """Write the report and print its path; every run is read before anything is written."""
    records = [run_record.load(path) for path in args.runs]
    for record in records:
        for where in record.damaged:
            console.say(f"warning: {where} is damaged; the report skips it")
    if len(records) == 1:
        output = args.output or records[0].path / REPORT_FILE
        check_writable(output)
        document = single(records[0])
    else:
        output = args.output or Path(COMPARE_FILE)
        check_writable(output)
        document = compare_report.document(records)
    print(write(output, document))
    return 0


def single(record: RunRecord) -> str:
    """The report of one run; its plots/*.png are redrawn first, so the files and the page show the same curves."""
    name = record.path.resolve().name
    finished = record.summary is not None
    summary = {key: run_record.format_value(key, value) for key, value in run_record.summary_values(record).items()}
    body = (f"<h1>{escape(name)}</h1>\n<p class=path>{escape(record.path.resolve())}</p>\n"
            f"<p class=status>{escape(run_record.status(record))}</p>\n")
    if record.damaged:
        body += f"<p class=status>Skipped (damaged, not readable): {escape(', '.join(record.damaged))}</p>\n"
    body += section("Summary" if finished else "Summary so far (from metrics.jsonl; summary.json is written when the run finishes)",
                    facts(summary))
    body += section("Plots", "<div class=plots>" + "".join(image(png, plot_alt(plot, name)) for plot, png in _plots(record).items())
                    + "</div>")
    environment = run_record.environment_facts(record)
    body += section("Environment", facts(environment) if record.manifest else "<p>No manifest.json in the run directory.</p>")
    body += section("Attempts", table(ATTEMPT_COLUMNS, map(_attempt_row, record.attempts)) if record.attempts
                    else "<p>No attempts.jsonl in the run directory.</p>")
    body += section("Config", f"<pre>{escape(record.config_text)}</pre>" if record.config_text is not None
                    else "<p>No config.yaml in the run directory.</p>")
    return page(f"lockstep report: {name}", body)


def _plots(record: RunRecord) -> dict[str, bytes]:
    try:
        paths = outputs.write_plots(record.path, record.rows)
    except OSError as exc:
        raise OutputDirError(f"cannot redraw the plots in {record.path / PLOTS_DIR}: {exc.strerror}; "
                             "report on a copy of the run directory instead") from exc
    return {path.stem: path.read_bytes() for path in paths}


def _attempt_row(attempt: dict) -> list[object]:
    git = attempt.get("git") or {}
    resumed = attempt.get("resumed_from_step")
    commit = (git.get("commit") or "")[:12] + (" (uncommitted changes)" if git.get("dirty") else "")
    return [attempt.get("attempt", "?"), attempt.get("started_at", ""), attempt.get("backend", ""), attempt.get("host", ""),
            "start" if resumed is None else resumed, attempt.get("stack") or "", commit]
