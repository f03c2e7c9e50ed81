"""Building blocks of lockstep's self-contained HTML reports: escaping, tables, embedded images, the page itself."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import runner
from runner.errors import OutputDirError
from runner.job import outputs
from runner.util.files import write_atomic

# The page loads nothing and runs nothing: it reads the same offline, from a mail, or years later.
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 1180px; margin: 2em auto; padding: 0 1em; }
h1 { margin-bottom: 0.1em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.path { color: #666; margin-top: 0; } .status { font-weight: 600; }
table { border-collapse: collapse; } th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; } .plots img { width: 560px; max-width: 100%; border: 1px solid #eee; }
footer { margin-top: 3em; color: #888; font-size: 0.85em; }
"""


def escape(value: object) -> str:
    """Every value that comes from a file goes through here: text, not markup."""
    return html.escape(str(value), quote=True)


def table(header: Sequence[str] | None, rows: Iterable[Sequence[object]], *, numeric_from: int | None = None) -> str:
    """A table of escaped cells, each row headed by its first; with `numeric_from`, cells from that column on are
    right-aligned numbers."""
    head = f"<thead><tr>{''.join(f'<th>{escape(cell)}</th>' for cell in header)}</tr></thead>" if header else ""
    body = []
    for row in rows:
        cells = [f"<th>{escape(cell)}</th>" if index == 0 else
                 f"<td{' class=num' if numeric_from is not None and index >= numeric_from else ''}>{escape(cell)}</td>"
                 for index, cell in enumerate(row)]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def facts(pairs: dict[str, str]) -> str:
    """A two-column table of label and value."""
    return table(None, pairs.items())


def image(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{escape(alt)}">'


def plot_alt(plot: str, subject: str) -> str:
    """The alt text of a plot image: whose curves of what."""
    series, _ = outputs.PLOT_SERIES[plot]
    return f"{subject}: {' and '.join(what for _, what in series)} by optimizer step"


def section(title: str, body: str) -> str:
    return f"<h2>{escape(title)}</h2>\n{body}\n"


def page(title: str, body: str) -> str:
    """A whole HTML document; `body` is already escaped markup."""
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{body}"
            f"<footer>written by lockstep {escape(runner.__version__)} on {written}</footer>\n</body>\n</html>\n")


def check_writable(path: Path) -> None:
    """Refuse an output path whose directory is missing before anything else is written."""
    if path.is_dir():
        raise OutputDirError(f"{path} is a directory; give --output a file name, e.g. {path / 'report.html'}")
    if not path.parent.is_dir():
        raise OutputDirError(f"cannot write {path}: its directory {path.parent} does not exist; create it or choose another --output")


def write(path: Path, document: str) -> Path:
    """Write the report whole (a reader never opens half of it) and return its path."""
    try:
        write_atomic(path, document)
    except OSError as exc:
        raise OutputDirError(f"cannot write {path}: {exc.strerror}; choose another place with --output PATH") from exc
    return path
