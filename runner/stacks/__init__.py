"""The stacks declared in lockfiles/stacks.toml, and whether each one's lock is current.

A lock (`lockfiles/<stack>.txt`) records the sha256 of the `.in` file it was compiled from;
a lock whose `.in` has changed since is stale, and nothing installs from it. The last line of
its header records the sha256 of its body (every line after that one): a lock edited by hand
(a package deleted, say) no longer matches it, and nothing installs from it either.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from runner import SOURCE_DIR
from runner.errors import StackError

LOCKFILES = SOURCE_DIR / "lockfiles"
STACKS_FILE = "stacks.toml"
INPUT_HASH = re.compile(r"^# input sha256: ([0-9a-f]{64})$", re.MULTILINE)
BODY_HASH_LINE = "# body sha256: "  # the last line of a lock's header
BODY_HASH = re.compile(re.escape(BODY_HASH_LINE).encode() + rb"([0-9a-f]{64})")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
ACCELERATORS = ("cpu", "cuda", "metal")
FIELDS = (
    "description", "python", "platforms", "index_url", "requirements", "resolved_before", "base_image", "accelerator", "engine",
)
OPTIONAL = ("project_index",)
LOCK_WORKFLOW = ".github/workflows/lock-cuda-stacks.yml"  # makes the locks that need PyTorch's index, where it is reachable


@dataclass(frozen=True)
class ProjectIndex:
    """Projects that come from this index only (PyTorch's CUDA builds from PyTorch's index); every
    other name comes from the stack's main index. Such an index may record no upload times, so the
    stack's cut-off is waived for these projects: their versions are pinned in the `.in` file."""

    url: str
    projects: tuple[str, ...]


@dataclass(frozen=True)
class Stack:
    name: str
    description: str
    python: str
    platforms: tuple[str, ...]
    index_url: str  # every project not in project_index
    requirements: str
    resolved_before: str  # packages uploaded later are not considered, so re-locking gives the same lock
    base_image: str
    accelerator: str
    engine: str
    project_index: ProjectIndex | None = None
    root: Path = LOCKFILES

    @property
    def extra_index_url(self) -> str | None:
        """The index pip searches beside its own for this stack's files (PyTorch's), or None."""
        return self.project_index.url if self.project_index else None

    @property
    def input_file(self) -> Path:
        return self.root / self.requirements

    @property
    def lock_file(self) -> Path:
        return self.root / f"{self.name}.txt"

    def input_sha256(self) -> str:
        return hashlib.sha256(self.input_file.read_bytes()).hexdigest()

    def lock_problem(self) -> str | None:
        """None if the lock exists, matches its `.in` file and its body is the one it was made with,
        else what is wrong and how to fix it."""
        fix = f"run `nox -s lock -- {self.name}`"
        if not self.lock_file.is_file():
            return f"stack {self.name} has no lock ({self.lock_file.name}); {fix}"
        data = self.lock_file.read_bytes()
        match = INPUT_HASH.search(data.decode(errors="replace"))
        if match is None or match.group(1) != self.input_sha256():
            return f"the lock of stack {self.name} is stale: {self.input_file.name} changed since {self.lock_file.name} was made; {fix}"
        recorded, body = split_lock(data)
        if recorded == body_sha256(body):
            return None
        shown, line = f"{self.root.name}/{self.lock_file.name}", f"`{BODY_HASH_LINE.strip()}` line"
        if recorded is None:
            what = (f"{shown} has no {line} at the end of its header: it was made by an older lockstep, "
                    "or edited after it was made")
        else:
            what = f"{shown} was edited after it was made: its body no longer matches the {line} of its header"
        return (f"{what}, so nothing is installed from it. Re-lock the stack with `nox -s lock -- {self.name}`, "
                f"or restore the file from version control: `git checkout {shown}`")


def body_sha256(body: bytes | str) -> str:
    """The digest a lock's header records of its body: one function for the writer and the checker."""
    return hashlib.sha256(body.encode() if isinstance(body, str) else body).hexdigest()


def split_lock(lock: bytes) -> tuple[str | None, bytes]:
    """The body digest a lock's header records and the body (every byte after that line).

    Only the header counts, the comment lines before the first package: a digest line further down
    would let lines above it go unchecked. (None, the whole lock) when the header has no such line.
    """
    position = 0
    while lock.startswith(b"#", position):
        end = lock.find(b"\n", position)
        if end == -1:
            break
        match = BODY_HASH.fullmatch(lock, position, end)
        if match:
            return match.group(1).decode(), lock[end + 1:]
        position = end + 1
    return None, lock


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


def entries(lock_text: str) -> dict[str, str]:
    """Each package's lines of a lock (its pin, hashes and `# via` notes) by normalized name; a name
    pinned per platform (a universal lock) gets all its entries."""
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock_text):
        match = PIN.match(block)
        if match:
            name = normalize(match.group(1))
            found[name] = found.get(name, "") + block.rstrip("\n") + "\n"
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
        unknown = sorted(set(entry) - set(FIELDS) - set(OPTIONAL))
        if missing or unknown:
            problems.append(f"stack {name}: missing {', '.join(missing) or 'nothing'}; unknown {', '.join(unknown) or 'nothing'}")
            continue
        project_index, problem = _project_index(entry.get("project_index"))
        if problem:
            problems.append(f"stack {name}: {problem}")
        stack = Stack(
            name=name,
            **{key: tuple(entry[key]) if isinstance(entry[key], list) else entry[key] for key in FIELDS},
            project_index=project_index,
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


def _project_index(entry: object) -> tuple[ProjectIndex | None, str | None]:
    if entry is None:
        return None, None
    if (not isinstance(entry, dict) or set(entry) != {"url", "projects"} or not isinstance(entry["url"], str)
            or not isinstance(entry["projects"], list) or not entry["projects"]):
        return None, 'project_index must be a table of url (a string) and projects (a list of names), nothing else'
    return ProjectIndex(entry["url"].rstrip("/"), tuple(normalize(name) for name in entry["projects"])), None


def get(name: str, root: Path = LOCKFILES) -> Stack:
    stacks = load(root)
    if name not in stacks:
        raise StackError(f"unknown stack {name!r}; stacks in {root / STACKS_FILE}: {', '.join(stacks)}")
    return stacks[name]
