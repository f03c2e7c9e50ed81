"""A local PEP 503 index that holds only a stack's `project_index` projects: how a lock takes torch
from PyTorch's index and every other name from PyPI.

uv takes each name from the first index that serves it. PyTorch's index also serves nvidia-*,
requests, typing-extensions and more, often older than PyPI's: searched first, it would shadow
PyPI for all of them (and searched by best match, lend its copies and hashes of PyPI's files).
`uv pip compile` has no per-package index option outside a project, so the mapping is made
here: a directory with one page per declared project, copied from the real index (links made
absolute, `#sha256=` kept), searched before PyPI. A declared project the index does not serve
gets an empty page, so it is never looked up on PyPI either.

Where the index cannot be reached, the pages can be made from local wheel directories instead
(the declared fallback, `--find-links`); again only the declared projects' files are listed, so
a machine's wheel folder cannot leak anything else into a lock.
"""

from __future__ import annotations

import html
import html.parser
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename

from runner.errors import StackError
from runner.stacks import ProjectIndex, indexes, normalize
from runner.util.hashing import file_sha256

KEPT_ATTRIBUTES = ("data-requires-python", "data-yanked", "data-dist-info-metadata", "data-core-metadata")
PAGE_TIMEOUT_S = 60


def from_index(declared: ProjectIndex, dest: Path) -> Path:
    """The declared projects' pages of the real index (reached at its address from here) under `dest`."""
    for project in declared.projects:
        page_url = f"{indexes.address(declared.url)}/{project}/"
        try:
            with urllib.request.urlopen(page_url, timeout=PAGE_TIMEOUT_S) as response:
                body, final_url = response.read().decode(), response.geturl()
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise StackError(f"{declared.url}: the page of {project} could not be read ({exc})") from exc
            body, final_url = "", page_url  # not served there: an empty page keeps it off the other indexes
        except (urllib.error.URLError, OSError) as exc:
            raise StackError(f"{declared.url}: the page of {project} could not be read ({getattr(exc, 'reason', exc)})") from exc
        links = [(urllib.parse.urljoin(final_url, href), text, attributes) for href, text, attributes in _anchors(body)]
        _write_page(dest, project, links)
    return dest


def from_wheels(declared: ProjectIndex, directories: Sequence[str], dest: Path) -> Path:
    """The declared projects' files found in local `directories` (the fallback for an unreachable index)."""
    files: dict[str, list[Path]] = {project: [] for project in declared.projects}
    for directory in directories:
        for path in sorted(Path(directory).glob("*")) if Path(directory).is_dir() else []:
            project = _project_of(path.name)
            if project in files:
                files[project].append(path)
    for project, paths in files.items():
        links = [(f"{path.resolve().as_uri()}#sha256={file_sha256(path)}", path.name, {}) for path in paths]
        _write_page(dest, project, links)
    return dest


def found(dest: Path) -> dict[str, int]:
    """How many files each page of a local index lists (to say what a fallback directory held)."""
    return {page.parent.name: page.read_text().count("<a ") for page in sorted(dest.glob("*/index.html"))}


def _project_of(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return normalize(parse_wheel_filename(filename)[0])
        if filename.endswith((".tar.gz", ".zip")):
            return normalize(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return None


def _write_page(dest: Path, project: str, links: list[tuple[str, str, dict[str, str]]]) -> None:
    anchors = []
    for href, text, attributes in links:
        kept = "".join(f' {name}="{html.escape(value)}"' for name, value in attributes.items() if name in KEPT_ATTRIBUTES)
        anchors.append(f'<a href="{html.escape(href)}"{kept}>{html.escape(text)}</a><br/>\n')
    (dest / project).mkdir(parents=True, exist_ok=True)
    (dest / project / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{''.join(anchors)}</body></html>\n")


def _anchors(page: str) -> list[tuple[str, str, dict[str, str]]]:
    parser = _AnchorParser()
    parser.feed(page)
    return parser.anchors


class _AnchorParser(html.parser.HTMLParser):
    """The `<a href=...>` elements of a PEP 503 page: href, text and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[str, str, dict[str, str]]] = []
        self._open: tuple[str, dict[str, str]] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "a" and attributes.get("href"):
            self._open, self._text = (attributes.pop("href"), attributes), []

    def handle_data(self, data: str) -> None:
        if self._open:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open:
            href, attributes = self._open
            self.anchors.append((href, "".join(self._text).strip(), attributes))
            self._open = None
