"""Where a package index is reached from here, whether it answers, and the wheel directories pip is configured with.

An index is named in stacks.toml and in every lock by its public address; LOCKSTEP_INDEX_MIRRORS
(`PREFIX=REPLACEMENT` pairs, space-separated) reaches it somewhere else: a company mirror, or a
copy of it that a test serves. Locks never record the replacement, so they are the same either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runner.errors import StackError
from runner.util import console

if TYPE_CHECKING:
    from runner.stacks import Stack


MIRRORS_VARIABLE = "LOCKSTEP_INDEX_MIRRORS"


def address(url: str) -> str:
    """Where the index `url` is reached from here: its replacement in LOCKSTEP_INDEX_MIRRORS, else itself."""
    for pair in os.environ.get(MIRRORS_VARIABLE, "").split():
        prefix, separator, replacement = pair.partition("=")
        if not separator or not prefix or not replacement:
            raise StackError(f"{MIRRORS_VARIABLE}: {pair!r} is not PREFIX=REPLACEMENT, e.g. "
                             "https://download.pytorch.org/whl=https://mirror.example/pytorch/whl")
        if url == prefix.rstrip("/") or url.startswith(prefix.rstrip("/") + "/"):
            return replacement.rstrip("/") + url[len(prefix.rstrip("/")):]
    return url


def unreachable(urls: Sequence[str], timeout_s: float = 10) -> dict[str, str]:
    """The indexes among `urls` (public addresses) that do not answer from here, each with the reason."""
    failed = {}
    for url in urls:
        try:
            with urllib.request.urlopen(urllib.request.Request(address(url) + "/", method="HEAD"), timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered; an index may refuse HEAD on its root and still serve packages
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failed[url] = str(getattr(exc, "reason", exc))
    return failed


def extra_index_args(stack: Stack) -> list[str]:
    """pip's --extra-index-url for the stack's project index (PyTorch's), leaving it out (with a note)
    if it does not answer, so pip does not spend minutes retrying it; pip then finds those packages
    in its own configured sources or says which it could not find. pip's own index stays as the
    user configured it (a mirror of PyPI, say)."""
    url = stack.extra_index_url
    if url is None:
        return []
    down = unreachable([url])
    if down:
        console.say(f"{url} cannot be reached ({down[url]}); going on without it")
        return []
    return [f"--extra-index-url={address(url)}"]


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
