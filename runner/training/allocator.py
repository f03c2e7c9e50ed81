"""The CUDA caching allocator's settings variable: which name the installed torch reads, and the
default lockstep sets in every job (expandable segments, which avoid fragmentation OOMs).

torch read only PYTORCH_CUDA_ALLOC_CONF before 2.8. 2.8 added PYTORCH_ALLOC_CONF and calls the old
name deprecated, yet up to 2.10 the new name's expandable_segments is silently ignored on CUDA
(https://github.com/pytorch/pytorch/issues/183387); from 2.11 the new name works and the old one
stays an alias.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import MutableMapping

from packaging.version import InvalidVersion, Version

OLD_NAME, NEW_NAME = "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"
EXPANDABLE = "expandable_segments:True"
NEW_NAME_EXISTS, NEW_NAME_WORKS = Version("2.8"), Version("2.11")


def release(torch_version: str) -> Version:
    try:
        return Version(Version(torch_version).base_version)
    except InvalidVersion:
        return Version("0")


def variable_for(torch_version: str) -> str:
    """The name under which `torch_version` applies allocator settings on CUDA."""
    return NEW_NAME if release(torch_version) >= NEW_NAME_WORKS else OLD_NAME


def expandable(value: str) -> bool:
    return "expandable_segments:true" in value.replace(" ", "").lower()


def set_default(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Turn expandable segments on under the name this torch reads, unless the user set either name;
    returns the variable set. Called before CUDA is first used (the allocator reads it then)."""
    if OLD_NAME in environ or NEW_NAME in environ:
        return None
    try:
        name = variable_for(importlib.metadata.version("torch"))
    except importlib.metadata.PackageNotFoundError:
        return None
    environ[name] = EXPANDABLE
    return name
