"""A stack's container image: the files it is built from, its tag and labels, and the build.

The tag is `lockstep/<stack>:<12 hex>`, a digest of the lock's sha256 and of the sha256 of
every other file the image is built from (with the base image and Python version), so the
same inputs always give the same tag and a build whose image exists is skipped. The build
context is staged with exactly those files, plus the lock's wheels (`runner.stacks.wheelhouse`),
so the build needs no network and never reads a virtual environment or a run directory.

    python -m runner.stacks.images build STACK [--base-image REF] [--no-cache]    (nox -s build)
    python -m runner.stacks.images context STACK DIR                              a context to build by hand
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from runner import stacks
from runner.errors import ImageError, StackError, run_command
from runner.stacks import containers, wheelhouse
from runner.util import console, shell
from runner.util.files import write_atomic
from runner.util.gitinfo import git
from runner.util.hashing import file_sha256

DOCKERFILE = "docker/Dockerfile"
IMAGE_PYTHON = "/opt/venv/bin/python"  # the stack's venv inside every lockstep image (docker/install-lock.sh)
SCRIPTS = ("docker/install-python.sh", "docker/install-lock.sh")
WHEELS_IN_CONTEXT = "wheelhouse"
LABEL_STACK, LABEL_LOCK, LABEL_CODE = "io.lockstep.stack", "io.lockstep.lock-sha256", "io.lockstep.code-sha256"


@dataclass(frozen=True)
class ImageSpec:
    """Everything an image of `stack` is built from; equal specs build equal images."""

    stack: stacks.Stack
    base_image: str
    files: dict[str, Path]  # path in the build context -> file in the repository
    lock_sha256: str
    code_sha256: str  # every file but the lock, the base image and the Python version
    source_date_epoch: int  # the commit's time: every file in the image carries it
    git_commit: str  # "" outside a git checkout; "-dirty" appended when the files differ from it

    @property
    def tag(self) -> str:
        digest = hashlib.sha256(f"{self.lock_sha256}\n{self.code_sha256}".encode()).hexdigest()
        return f"lockstep/{self.stack.name}:{digest[:12]}"

    def build_args(self) -> dict[str, str]:
        return {
            "BASE_IMAGE": self.base_image,
            "PYTHON": self.stack.python,
            "STACK": self.stack.name,
            "PIP_INDEX_ARGS": "--no-index",  # every wheel comes from the staged wheelhouse
            "LOCK_SHA256": self.lock_sha256,
            "CODE_SHA256": self.code_sha256,
            "GIT_COMMIT": self.git_commit,
            "CREATED": datetime.fromtimestamp(self.source_date_epoch, timezone.utc).isoformat(timespec="seconds"),
        }


@dataclass(frozen=True)
class Built:
    spec: ImageSpec
    info: containers.ImageInfo
    seconds: float
    reused: bool  # the image existed: nothing was built


def spec(stack: stacks.Stack, base_image: str | None = None) -> ImageSpec:
    problem = stack.lock_problem()
    if problem:
        raise StackError(problem)
    root = stack.root.parent
    files = {rel: root / rel for rel in (DOCKERFILE, *SCRIPTS, "pyproject.toml")}
    lock_rel = f"lockfiles/{stack.lock_file.name}"
    files[lock_rel] = stack.lock_file
    for path in sorted(stack.root.glob("*.in")) + sorted(stack.root.glob("*.toml")):
        files[f"lockfiles/{path.name}"] = path  # the image checks its own lock as a venv does
    for path in sorted((root / "runner").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[path.relative_to(root).as_posix()] = path
    base = base_image or os.environ.get("LOCKSTEP_BASE_IMAGE") or stack.base_image
    code = hashlib.sha256(f"base {base}\npython {stack.python}\n".encode())
    for rel, path in sorted(files.items()):
        if rel != lock_rel:
            code.update(f"{rel} {file_sha256(path)}\n".encode())
    commit, epoch = _git_state(root)
    return ImageSpec(stack=stack, base_image=base, files=files, lock_sha256=file_sha256(stack.lock_file),
                     code_sha256=code.hexdigest(), source_date_epoch=epoch, git_commit=commit)


def stage_context(image: ImageSpec, dest: Path, wheels: Path | None) -> Path:
    """Write the build context into `dest` (replacing it): the spec's files and the wheels."""
    shutil.rmtree(dest, ignore_errors=True)
    for rel, source in image.files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(0o755 if rel.endswith(".sh") else 0o644)  # not the checkout's umask: same inputs, same layer
    (dest / WHEELS_IN_CONTEXT).mkdir()
    for wheel in sorted(wheels.iterdir()) if wheels else ():
        _link_or_copy(wheel, dest / WHEELS_IN_CONTEXT / wheel.name)
    return dest


def build(
    stack: stacks.Stack, *, base_image: str | None = None, no_cache: bool = False, wheels: Path | None = None,
    tool: containers.Tool | None = None,
) -> Built:
    """Build the stack's image unless an image with its tag exists; print its tag and size."""
    image = spec(stack, base_image)
    tool = tool or containers.find("build")
    started = time.monotonic()
    existing = None if no_cache else tool.inspect(image.tag)
    if existing is not None:
        console.say(f"image {image.tag} is up to date ({_size(existing)}); --no-cache builds it again")
        return Built(image, existing, time.monotonic() - started, reused=True)
    if not image.base_image.partition("@")[2].startswith("sha256:"):
        console.say(f"note: base image {image.base_image} is not pinned by digest: a rebuild may start from other bytes; "
                    "pin it in lockfiles/stacks.toml as NAME:TAG@sha256:DIGEST")
    wheels = wheelhouse.fill(stack, wheels)
    context = stage_context(image, stack.root.parent / "build" / "context" / stack.name, wheels)
    argv = tool.build_argv(context=context, dockerfile=context / DOCKERFILE, tag=image.tag, build_args=image.build_args(),
                           timestamp=image.source_date_epoch, no_cache=no_cache)
    console.say(f"building {image.tag} with {tool.name} from {image.base_image}")
    if subprocess.run(argv).returncode != 0:
        raise ImageError(f"the build of {image.tag} failed; {tool.name} said why above (command: {shell.join(argv)})")
    info = tool.inspect(image.tag)
    if info is None:
        raise ImageError(f"{tool.name} reported success but has no image {image.tag}")
    seconds = time.monotonic() - started
    console.say(f"built {image.tag} in {seconds:.0f} s ({_size(info)}); {info.id}")
    return Built(image, info, seconds, reused=False)


def _git_state(root: Path) -> tuple[str, int]:
    """(commit, its time) of the checkout; SOURCE_DATE_EPOCH, when set, wins over the commit time."""
    found = git(root, "log", "-1", "--format=%H %ct")
    commit, _, when = (found or "").partition(" ")
    if commit and git(root, "status", "--porcelain", "--", "docker", "lockfiles", "runner", "pyproject.toml"):
        commit += "-dirty"
    epoch = os.environ.get("SOURCE_DATE_EPOCH") or when or "0"
    return commit, int(epoch)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # wheels can weigh gigabytes; a hard link costs nothing
    except OSError:
        shutil.copyfile(source, target)


def _size(info: containers.ImageInfo) -> str:
    return f"{info.size / 1e9:.2f} GB" if info.size else "size unknown"



def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.stacks.images", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build the images of the named stacks (nox -s build)")
    build_cmd.add_argument("stacks", nargs="+")
    build_cmd.add_argument("--base-image", help="another base (a mirror or private registry); default: LOCKSTEP_BASE_IMAGE, else stacks.toml's")
    build_cmd.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    build_cmd.add_argument("--wheelhouse", type=Path, help="the lock's wheels (default: wheelhouse/STACK, filled as needed)")
    build_cmd.add_argument("--json", type=Path, help="also write what was built (tag, id, size, seconds) to this file")
    context_cmd = commands.add_parser("context", help="stage a stack's build context in DIR, to build it by hand")
    context_cmd.add_argument("stack")
    context_cmd.add_argument("dir", type=Path)
    tag_cmd = commands.add_parser("tag", help="print the tag the stack's image has for the current files")
    tag_cmd.add_argument("stack")
    tag_cmd.add_argument("--base-image")
    args = parser.parse_args(argv)
    return run_command(lambda: _command(args))


def _command(args: argparse.Namespace) -> int:
    if args.command == "tag":
        print(spec(stacks.get(args.stack), args.base_image).tag)
    elif args.command == "context":
        image = spec(stacks.get(args.stack))
        wheels = wheelhouse.default_dir(image.stack)
        stage_context(image, args.dir, wheels if wheels.is_dir() else None)
        print(shell.join(containers.Tool("docker").build_argv(
            context=args.dir, dockerfile=args.dir / DOCKERFILE, tag=image.tag, build_args=image.build_args(),
            timestamp=image.source_date_epoch)))
    else:
        results = [build(stacks.get(name), base_image=args.base_image, no_cache=args.no_cache, wheels=args.wheelhouse)
                   for name in args.stacks]
        if args.json:
            write_atomic(args.json, json.dumps([_record(built) for built in results], indent=2) + "\n")
    return 0


def _record(built: Built) -> dict[str, object]:
    return {"stack": built.spec.stack.name, "tag": built.spec.tag, "id": built.info.id, "size": built.info.size,
            "seconds": round(built.seconds, 1), "reused": built.reused, "layers": list(built.info.layers)}


if __name__ == "__main__":
    sys.exit(main())
