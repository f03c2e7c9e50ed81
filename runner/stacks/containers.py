"""Which container tool this machine has (docker, podman, buildah), and the exact commands for each.

LOCKSTEP_CONTAINER_TOOL picks one. Host specifics (storage driver, runtime, ulimits, network)
belong in the tools' own configuration (containers.conf, storage.conf, daemon.json), not here.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from runner.errors import ImageError

TOOLS = ("docker", "podman", "buildah")
RUNNERS = ("docker", "podman")  # buildah builds images but does not run them
Purpose = Literal["build", "run"]


@dataclass(frozen=True)
class ImageInfo:
    id: str
    size: int | None  # bytes
    labels: dict[str, str]
    layers: tuple[str, ...]  # uncompressed layer digests (diff ids), base first
    env: tuple[str, ...] = ()  # NAME=VALUE, as the image's config sets them
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tool:
    name: str  # docker | podman | buildah

    def build_argv(
        self, *, context: Path, dockerfile: Path, tag: str, build_args: dict[str, str], timestamp: int,
        no_cache: bool = False, target: str | None = None,
    ) -> list[str]:
        """The build command. Every file in the image gets the `timestamp` mtime, so the same inputs
        build the same bytes (buildah/podman --timestamp; BuildKit's rewrite-timestamp)."""
        if self.name == "docker":
            argv = ["docker", "buildx", "build", f"--build-arg=SOURCE_DATE_EPOCH={timestamp}",
                    f"--output=type=docker,name={tag},rewrite-timestamp=true"]
        else:
            argv = [*(["podman", "build"] if self.name == "podman" else ["buildah", "bud"]), "--layers", f"--timestamp={timestamp}", f"--tag={tag}"]
        argv += [f"--build-arg={key}={value}" for key, value in build_args.items()]
        argv += ["--no-cache"] * no_cache + ([f"--target={target}"] if target else [])
        return [*argv, f"--file={dockerfile}", str(context)]

    def inspect(self, ref: str) -> ImageInfo | None:
        """The image `ref` in this tool's store, or None if there is none."""
        argv = ["buildah", "inspect", "--type=image", ref] if self.name == "buildah" else [self.name, "image", "inspect", ref]
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            return None
        data: Any = json.loads(result.stdout)
        if self.name == "buildah":
            oci = data["OCIv1"]
            return ImageInfo(id=data["FromImageID"], size=None, labels=oci["config"].get("Labels") or {},
                             layers=tuple(oci["rootfs"]["diff_ids"]), **_run_config(oci["config"]))
        image = data[0]
        image_id = image["Id"] if image["Id"].startswith("sha256:") else f"sha256:{image['Id']}"
        config = image.get("Config") or {}
        return ImageInfo(id=image_id, size=image.get("Size"), labels=config.get("Labels") or {},
                         layers=tuple(image["RootFS"]["Layers"]), **_run_config(config))

    @property
    def archive_scheme(self) -> str:
        """The kind of single-file archive export_argv writes, named as Apptainer's URI scheme."""
        return "docker-archive" if self.name == "docker" else "oci-archive"

    def export_argv(self, ref: str, archive: Path) -> list[str]:
        """The command writing `ref` to a single-file archive."""
        if self.name == "docker":
            return ["docker", "save", f"--output={archive}", ref]
        if self.name == "podman":
            return ["podman", "save", "--format=oci-archive", f"--output={archive}", ref]
        return ["buildah", "push", ref, f"oci-archive:{archive}:{ref}"]


def _run_config(config: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    return {"env": tuple(config.get("Env") or ()), "entrypoint": tuple(config.get("Entrypoint") or ()),
            "cmd": tuple(config.get("Cmd") or ())}


def find(purpose: Purpose) -> Tool:
    """The first usable tool for `purpose`: LOCKSTEP_CONTAINER_TOOL if set, else docker (when its
    daemon answers), podman, buildah."""
    candidates = RUNNERS if purpose == "run" else TOOLS
    chosen = os.environ.get("LOCKSTEP_CONTAINER_TOOL")
    if chosen:
        if chosen not in candidates:
            raise ImageError(f"LOCKSTEP_CONTAINER_TOOL={chosen} cannot {purpose} images; use one of {', '.join(candidates)}")
        if not _usable(chosen, purpose):
            raise ImageError(f"LOCKSTEP_CONTAINER_TOOL={chosen}, but {chosen} is not usable here ({_why_not(chosen)})")
        return Tool(chosen)
    for name in candidates:
        if _usable(name, purpose):
            return Tool(name)
    raise ImageError(
        f"no container tool that can {purpose} images was found (looked for {', '.join(candidates)}); install podman "
        "(`apt-get install podman`, `brew install podman`) or Docker, or use --backend local"
    )


def _usable(name: str, purpose: Purpose) -> bool:
    if shutil.which(name) is None:
        return False
    if name != "docker":
        return True
    # A docker client without a reachable daemon (or, for builds, without buildx) is not enough.
    checks = [["docker", "info"]] + ([["docker", "buildx", "version"]] if purpose == "build" else [])
    try:
        return all(subprocess.run(check, capture_output=True, timeout=20).returncode == 0 for check in checks)
    except subprocess.TimeoutExpired:
        return False


def _why_not(name: str) -> str:
    if shutil.which(name) is None:
        return "not on PATH"
    return "its daemon does not answer, or buildx is missing" if name == "docker" else "unknown"


def mount_option(source: Path, target: Path, mode: str) -> str:
    """A --mount value. docker and podman read it as one CSV record, so a path with a comma or a
    double quote is quoted the CSV way, and stays one field."""
    if "\n" in f"{source}{target}":
        raise ImageError(f"cannot mount {str(source)!r} into a container: its name has a newline; rename it")
    fields = ["type=bind", f"source={source}", f"destination={target}"] + (["ro"] if mode == "ro" else [])
    record = io.StringIO()
    csv.writer(record, lineterminator="").writerow(fields)
    return record.getvalue()
