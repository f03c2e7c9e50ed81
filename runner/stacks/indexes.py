"""Which package indexes answer from here, and the wheel directories pip is configured with."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runner.util import console

if TYPE_CHECKING:
    from runner.stacks import Stack


def unreachable(urls: Sequence[str], timeout_s: float = 10) -> dict[str, str]:
    """The indexes among `urls` that do not answer, each with the reason."""
    failed = {}
    for url in urls:
        try:
            with urllib.request.urlopen(urllib.request.Request(url.rstrip("/") + "/", method="HEAD"), timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered; an index may refuse HEAD on its root and still serve packages
        except (urllib.error.URLError, OSError) as exc:
            failed[url] = str(getattr(exc, "reason", exc))
    return failed


def extra_index_args(stack: Stack) -> list[str]:
    """pip's --extra-index-url for the stack's indexes beyond the first, leaving out (with a note)
    those that do not answer, so pip does not spend minutes retrying them; pip then finds those
    packages in its own configured sources or says which it could not find."""
    down = unreachable(stack.index_urls[1:])
    for url, reason in down.items():
        console.say(f"{url} cannot be reached ({reason}); going on without it")
    return [f"--extra-index-url={url}" for url in stack.index_urls[1:] if url not in down]


def pip_find_links() -> list[str]:
    """Local wheel directories configured for pip (PIP_FIND_LINKS or pip.conf), which uv does not read."""
    if os.environ.get("PIP_FIND_LINKS"):
        return os.environ["PIP_FIND_LINKS"].split()
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    links: list[str] = []
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            links += [link for link in value.strip("'\"").split() if link not in links]
    return links
