"""The stacks declared in lockfiles/stacks.toml, and whether each one's lock is current.

A lock (`lockfiles/<stack>.txt`) records the sha256 of the `.in` file it was compiled from;
a lock whose `.in` has changed since is stale, and nothing installs from it.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from runner.errors import StackError

LOCKFILES = Path(__file__).resolve().parent.parent / "lockfiles"
STACKS_FILE = "stacks.toml"
INPUT_HASH = re.compile(r"^# input sha256: ([0-9a-f]{64})$", re.MULTILINE)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)
ACCELERATORS = ("cpu", "cuda", "metal")
FIELDS = (
    "description", "python", "platforms", "index_urls", "requirements", "resolved_before", "base_image", "accelerator", "engine",
)


@dataclass(frozen=True)
class Stack:
    name: str
    description: str
    python: str
    platforms: tuple[str, ...]
    index_urls: tuple[str, ...]
    requirements: str
    resolved_before: str  # packages uploaded later are not considered, so re-locking gives the same lock
    base_image: str
    accelerator: str
    engine: str
    root: Path = LOCKFILES

    @property
    def input_file(self) -> Path:
        return self.root / self.requirements

    @property
    def lock_file(self) -> Path:
        return self.root / f"{self.name}.txt"

    def input_sha256(self) -> str:
        return hashlib.sha256(self.input_file.read_bytes()).hexdigest()

    def lock_problem(self) -> str | None:
        """None if the lock exists and matches its `.in` file, else what is wrong and how to fix it."""
        fix = f"run `nox -s lock -- {self.name}`"
        if not self.lock_file.is_file():
            return f"stack {self.name} has no lock ({self.lock_file.name}); {fix}"
        match = INPUT_HASH.search(self.lock_file.read_text())
        if match is None or match.group(1) != self.input_sha256():
            return f"the lock of stack {self.name} is stale: {self.input_file.name} changed since {self.lock_file.name} was made; {fix}"
        return None


def normalize(name: str) -> str:
    """PEP 503 name: `Foo_Bar.baz` and `foo-bar-baz` are the same distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock_text: str) -> dict[str, list[str]]:
    """Every `name==version` of a lock by normalized name (a name pinned per platform can have several)."""
    found: dict[str, list[str]] = {}
    for name, version in PIN.findall(lock_text):
        versions = found.setdefault(normalize(name), [])
        if version not in versions:
            versions.append(version)
    return found


def load(root: Path = LOCKFILES) -> dict[str, Stack]:
    """Every stack of `root/stacks.toml`, validated; raise StackError listing every problem."""
    path = root / STACKS_FILE
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StackError(f"cannot read {path}: {exc}") from exc
    stacks, problems = {}, []
    for name, entry in raw.get("stacks", {}).items():
        missing = [key for key in FIELDS if key not in entry]
        unknown = sorted(set(entry) - set(FIELDS))
        if missing or unknown:
            problems.append(f"stack {name}: missing {', '.join(missing) or 'nothing'}; unknown {', '.join(unknown) or 'nothing'}")
            continue
        stack = Stack(
            name=name,
            **{key: tuple(entry[key]) if isinstance(entry[key], list) else entry[key] for key in FIELDS},
            root=root,
        )
        if stack.accelerator not in ACCELERATORS:
            problems.append(f"stack {name}: accelerator must be one of {', '.join(ACCELERATORS)}, not {stack.accelerator!r}")
        if not stack.input_file.is_file():
            problems.append(f"stack {name}: requirements file {stack.input_file} does not exist")
        stacks[name] = stack
    if problems:
        raise StackError(f"{path}: " + "; ".join(problems))
    return stacks


def get(name: str, root: Path = LOCKFILES) -> Stack:
    stacks = load(root)
    if name not in stacks:
        raise StackError(f"unknown stack {name!r}; stacks in {root / STACKS_FILE}: {', '.join(stacks)}")
    return stacks[name]
