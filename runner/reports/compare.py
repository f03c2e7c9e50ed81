"""Several runs side by side in one HTML page: their curves on shared plots, their summaries, and the config
keys and environment facts that differ between them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from runner.job import outputs
from runner.reports import record as run_record
from runner.reports.html_page import escape, image, page, plot_alt, section, table
from runner.reports.record import RunRecord

ABSENT = "(absent)"


def document(records: Sequence[RunRecord]) -> str:
    names = labels([record.path for record in records])
    body = f"<h1>Comparison of {len(records)} runs</h1>\n"
    body += table(("run", "directory", "status"),
                  [(name, record.path.resolve(), run_record.status(record)) for name, record in zip(names, records)])
    body += section("Summary", _summaries(names, records))
    runs = [(name, record.rows) for name, record in zip(names, records)]
    body += section("Plots", "<div class=plots>" + "".join(
        image(outputs.render_plot(plot, runs), plot_alt(plot, ", ".join(names))) for plot in outputs.PLOTS) + "</div>")
    body += section("Config differences", _differences(names, [flatten(record.config) for record in records], "configs"))
    body += section("Environment differences",
                    _differences(names, [run_record.environment_facts(record) for record in records], "environments"))
    return page(f"lockstep comparison: {', '.join(names)}", body)


def labels(paths: Sequence[Path]) -> list[str]:
    """Each run's directory name, with as many parent directories as it takes to tell the runs apart."""
    parts = [path.resolve().parts for path in paths]
    depth = [1] * len(parts)
    while True:
        names = [str(PurePath(*p[-d:])) for p, d in zip(parts, depth)]
        # Growing tells different directories apart; the same directory given twice stays alike.
        clashing = [i for i, name in enumerate(names) if depth[i] < len(parts[i])
                    and any(other == name and parts[j] != parts[i] for j, other in enumerate(names))]
        if not clashing:
            break
        for i in clashing:
            depth[i] += 1
    # Number the copies of a directory given twice.
    return [f"{name} #{names[:i + 1].count(name)}" if names.count(name) > 1 else name for i, name in enumerate(names)]


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config sections as dotted keys (train.learning_rate), each value written as YAML would."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return flat


def differing(tables: Sequence[dict[str, str]]) -> list[tuple[str, list[str]]]:
    """The keys whose values are not the same in every table (a key one table lacks counts), with each table's value."""
    keys = dict.fromkeys(key for found in tables for key in found)
    return [(key, [found.get(key, ABSENT) for found in tables]) for key in keys if len({found.get(key) for found in tables}) > 1]


def _summaries(names: Sequence[str], records: Sequence[RunRecord]) -> str:
    values = [run_record.summary_values(record) for record in records]
    keys = dict.fromkeys(key for summary in values for key in summary)
    note = "<p>An unfinished run's values are computed from its metrics so far.</p>" if any(r.summary is None for r in records) else ""
    return note + table(("", *names), [(key, *(run_record.format_value(key, summary.get(key)) for summary in values)) for key in keys],
                        numeric_from=1)


def _differences(names: Sequence[str], tables: Sequence[dict[str, str]], what: str) -> str:
    rows = differing(tables)
    if not rows:
        return f"<p>The {escape(what)} are the same.</p>"
    return table(("", *names), [(key, *values) for key, values in rows])
