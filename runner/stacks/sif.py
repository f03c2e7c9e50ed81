"""`nox -s sif -- STACK`: a real SIF (Apptainer's image file) of the stack's image, checked by reading it back.

Two builders make the same kind of file from the image `nox -s build` makes (never from the
Dockerfile again, so a SIF holds the bytes the other backends run):
- siftool (no Apptainer needed): the image's root filesystem, plus the `/.singularity.d` files
  Apptainer's runtime reads (env/10-docker2singularity.sh from the image's ENV, the runscript
  from its ENTRYPOINT and CMD, labels.json, the definition file) and charliecloud's
  /ch/environment (the same ENV), as one squashfs primary system partition; the definition
  file and the labels as descriptors of their own.
- apptainer (where it is installed): `apptainer build` from the image's OCI archive.
`--builder auto` (the default) takes apptainer where it is on PATH, else siftool.

Reproducible where it can be: the squashfs partition is the same bytes for the same image and
SOURCE_DATE_EPOCH (every time set to the commit's, no xattrs, mksquashfs's reproducible mode).
The SIF header and its descriptors still differ between two builds: `siftool new` writes a
random id and the current time, and `siftool add` stamps each object with the current time,
and neither lets a caller choose them. The partition's sha256 (written beside the SIF) is what
identifies the image.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runner import stacks
from runner.errors import ImageError, run_command
from runner.stacks import apptainer, containers, images, sif_file
from runner.util import console, shell
from runner.util.files import write_atomic
from runner.util.hashing import file_sha256

BUILDERS = ("auto", "siftool", "apptainer")
# gzip: the squashfs every kernel and squashfuse reads; level 1, because a SIF is rebuilt often and copied once.
SQUASHFS_OPTIONS = ("-noappend", "-no-xattrs", "-comp", "gzip", "-Xcompression-level", "1", "-no-progress", "-quiet")
SINGULARITY_DIR = ".singularity.d"
CHECKED_TREES = ("opt/lockstep",)  # besides site-packages: the code and the libraries must be the image's, byte for byte
DIGEST_SUFFIX = ".partition-sha256"
CHARLIECLOUD_ENV = "ch/environment"  # read by `ch-run --set-env` with no argument


@dataclass(frozen=True)
class BuiltSif:
    path: Path
    tag: str
    partition_sha256: str
    builder: str


def out_name(tag: str) -> str:
    return tag.replace("/", "-").replace(":", "-") + ".sif"  # lockstep/cpu:0123abcd -> lockstep-cpu-0123abcd.sif


def build(stack: stacks.Stack, out_dir: Path, *, builder: str = "auto", base_image: str | None = None) -> BuiltSif:
    """Build (or rebuild) the SIF of the stack's image in `out_dir`, check it, and return it."""
    chosen = _choose(builder)
    tool = containers.find("build")
    built = images.build(stack, base_image=base_image, tool=tool)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / out_name(built.spec.tag)
    with _rootfs(tool, built.spec.tag) as rootfs:
        if chosen == "siftool":
            write_sif(rootfs, target, tag=built.spec.tag, info=built.info, epoch=built.spec.source_date_epoch)
        else:
            sif_plan = apptainer.make(stack, out_dir, base_image=base_image)
            if sif_plan.sif != target:
                os.replace(sif_plan.sif, target)
        try:
            digest = verify(target, rootfs)
        except ImageError:
            target.unlink(missing_ok=True)  # a SIF at this path has passed its check, or is not there
            raise
    write_atomic(target.parent / (target.name + DIGEST_SUFFIX), (digest + "\n").encode())
    console.say(f"built {target} ({target.stat().st_size / 1e9:.2f} GB) with {chosen}; partition sha256 {digest}")
    return BuiltSif(target, built.spec.tag, digest, chosen)


def _choose(builder: str) -> str:
    if builder not in BUILDERS:
        raise ImageError(f"unknown SIF builder {builder!r}; choose one of {', '.join(BUILDERS)}")
    if builder == "auto":
        builder = "apptainer" if shutil.which("apptainer") else "siftool"
    needed = ("apptainer",) if builder == "apptainer" else ("siftool", "mksquashfs")
    missing = [name for name in (*needed, "unsquashfs") if shutil.which(name) is None]  # unsquashfs: the check
    if missing:
        raise ImageError(f"the {builder} SIF builder needs {', '.join(missing)}, not installed here: "
                         "`apt-get install siftool squashfs-tools` (Debian/Ubuntu), or install Apptainer")
    return builder


@contextmanager
def _rootfs(tool: containers.Tool, tag: str) -> Iterator[Path]:
    """The image's root filesystem as a directory, for as long as the block runs."""
    if tool.name == "podman":
        mounted = _output(["podman", "image", "mount", tag], f"mount {tag}")
        try:
            yield Path(mounted)
        finally:
            subprocess.run(["podman", "image", "unmount", tag], capture_output=True)
    elif tool.name == "buildah":
        container = _output(["buildah", "from", "--pull-never", tag], f"open {tag}")
        try:
            yield Path(_output(["buildah", "mount", container], f"mount {tag}"))
        finally:
            subprocess.run(["buildah", "rm", container], capture_output=True)
    else:  # docker: no mount of an image's files, so a copy of them
        container = _output(["docker", "create", tag], f"open {tag}")
        try:
            with tempfile.TemporaryDirectory(prefix="lockstep-rootfs-") as directory:
                export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
                unpacked = subprocess.run(["tar", "-x", "-C", directory], stdin=export.stdout)
                if export.wait() != 0 or unpacked.returncode != 0:
                    raise ImageError(f"could not copy the files of {tag} out of docker; it said why above")
                yield Path(directory)
        finally:
            subprocess.run(["docker", "rm", container], capture_output=True)


def write_sif(rootfs: Path, target: Path, *, tag: str, info: containers.ImageInfo, epoch: int) -> None:
    """The SIF of the image `tag` (its files at `rootfs`, its config `info`), with siftool and mksquashfs."""
    with tempfile.TemporaryDirectory(prefix="lockstep-sif-") as scratch_dir:
        scratch = Path(scratch_dir)
        files = {
            "env/10-docker2singularity.sh": env_script(info.env),
            "runscript": runscript(info.entrypoint, info.cmd),
            "labels.json": json.dumps(info.labels, indent=2, sort_keys=True) + "\n",
            "Singularity": definition(tag, info),
        }
        pseudo = [f"/{SINGULARITY_DIR} d 755 0 0", f"/{SINGULARITY_DIR}/env d 755 0 0"]
        pseudo += [] if (rootfs / "ch").is_dir() else ["/ch d 755 0 0"]
        sources = {f"{SINGULARITY_DIR}/{name}": text for name, text in files.items()}
        sources[CHARLIECLOUD_ENV] = charliecloud_env(info.env)
        for name, text in sources.items():
            source = scratch / Path(name).name
            source.write_text(text)
            mode = "755" if name.endswith(("runscript", ".sh")) else "644"
            pseudo.append(f"/{name} f {mode} 0 0 cat {shell.quote(str(source))}")
        partition = scratch / "rootfs.squashfs"
        command = ["mksquashfs", str(rootfs), str(partition), *SQUASHFS_OPTIONS, "-all-time", str(epoch), "-mkfs-time", str(epoch)]
        for definition_line in pseudo:
            command += ["-p", definition_line]
        _run(command, "make the squashfs partition")
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        _run(["siftool", "new", str(partial)], "start the SIF")
        (scratch / "labels").write_text(files["labels.json"])
        _run(["siftool", "add", str(partial), str(scratch / "Singularity"), "--datatype", "1"], "add the definition file")
        _run(["siftool", "add", str(partial), str(scratch / "labels"), "--datatype", "3"], "add the labels")
        _run(["siftool", "add", str(partial), str(partition), "--datatype", "4", "--parttype", "2", "--partfs", "1",
              "--partarch", "2"], "add the system partition")
        if sif_file.read(partial).sha256(sif_file.read(partial).primary_system()) != file_sha256(partition):
            raise ImageError(f"siftool wrote a partition into {partial} that is not the squashfs it was given")
        os.replace(partial, target)  # atomic: a SIF at this path is always a whole one


def env_script(env: Sequence[str]) -> str:
    """/.singularity.d/env/10-docker2singularity.sh: the image's ENV, which Apptainer only applies from here."""
    lines = ["#!/bin/sh", "# The image's ENV (as `apptainer build` converts a Docker image's)."]
    for item in env:
        name, _, value = item.partition("=")
        lines.append(f"export {name}={shell.quote(value)}")
    return "\n".join(lines) + "\n"


def charliecloud_env(env: Sequence[str]) -> str:
    """/ch/environment: the image's ENV as charliecloud's `ch-run --set-env` reads it (NAME=VALUE lines, literal)."""
    return "".join(f"{item}\n" for item in env if "\n" not in item)


def runscript(entrypoint: Sequence[str], cmd: Sequence[str]) -> str:
    """/.singularity.d/runscript: `apptainer run IMAGE ARGS` runs the image's ENTRYPOINT with ARGS (its CMD when none)."""
    lines = ["#!/bin/sh", "# The image's ENTRYPOINT, with the arguments given (its CMD when there are none)."]
    if cmd:
        lines.append(f'if [ "$#" -eq 0 ]; then set -- {shell.join(cmd)}; fi')
    lines.append(f'exec {shell.join(entrypoint)} "$@"' if entrypoint else 'exec "$@"')
    return "\n".join(lines) + "\n"


def definition(tag: str, info: containers.ImageInfo) -> str:
    """The definition file: how Apptainer itself builds the same image from its OCI archive."""
    labels = "".join(f"    {key} {value}\n" for key, value in sorted(info.labels.items()))
    return (f"# Built by lockstep from the image {tag} ({info.id}); `nox -s sif -- STACK --builder apptainer`\n"
            f"# builds the same from its archive.\nBootstrap: oci-archive\nFrom: {out_name(tag).removesuffix('.sif')}.oci.tar\n"
            f"\n%labels\n{labels}")


def verify(sif: Path, rootfs: Path) -> str:
    """Read the SIF back: a squashfs primary system partition for amd64 (and, for siftool's, the
    definition and labels), every path of the image's root filesystem in it, and the code and
    site-packages trees the same bytes. Returns the partition's sha256."""
    try:
        image = sif_file.read(sif)
        partition = image.primary_system()
    except (OSError, sif_file.SifFormatError) as exc:
        raise ImageError(f"{sif} is not a usable SIF: {exc}") from exc
    if partition.fs_type != sif_file.FS_SQUASH or partition.arch != "amd64":
        raise ImageError(f"{sif}: the system partition is not a squashfs for amd64 ({partition})")
    with tempfile.TemporaryDirectory(prefix="lockstep-sif-check-") as scratch_dir:
        scratch = Path(scratch_dir)
        squashfs = scratch / "partition.squashfs"
        image.extract(partition, squashfs)
        listed = _output(["unsquashfs", "-d", "", "-l", str(squashfs)], f"list {sif}").splitlines()
        in_sif = {line.lstrip("/") for line in listed if line.strip("/")}
        missing = sorted(paths(rootfs) - in_sif)[:5]
        if missing:
            raise ImageError(f"{sif} lacks files of the image, e.g. {', '.join(missing)}")
        trees = [*CHECKED_TREES, *(str(p.relative_to(rootfs)) for p in rootfs.glob("opt/venv/lib/python*/site-packages"))]
        _run(["unsquashfs", "-d", str(scratch / "tree"), "-no-xattrs", "-quiet", "-no-progress", str(squashfs), *trees],
             f"unpack {', '.join(trees)} from {sif}")
        for tree in trees:
            different = _first_difference(rootfs / tree, scratch / "tree" / tree)
            if different:
                raise ImageError(f"{sif}: {tree}/{different} is not the image's")
        return file_sha256(squashfs)


def paths(root: Path) -> set[str]:
    """Every entry under `root` (directories too), relative to it; symbolic links are not followed."""
    found = set()
    for directory, subdirectories, files in os.walk(root):
        base = Path(directory).relative_to(root)
        found.update(str(base / name) for name in (*subdirectories, *files))
    return found


def _first_difference(expected: Path, actual: Path) -> str | None:
    for relative in sorted(paths(expected)):
        path, other = expected / relative, actual / relative
        if path.is_symlink():
            same = other.is_symlink() and os.readlink(path) == os.readlink(other)
        elif path.is_file():
            same = other.is_file() and not other.is_symlink() and file_sha256(path) == file_sha256(other)
        else:
            same = other.is_dir()
        if not same:
            return relative
    return None


def _output(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageError(f"could not {what} (command: {shell.join(command)}): {result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


def _run(command: list[str], what: str) -> None:
    _output(command, what)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nox -s sif --", description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="+")
    parser.add_argument("--out", type=Path, default=stacks.LOCKFILES.parent / "build" / "sif", help="directory (default: build/sif)")
    parser.add_argument("--builder", choices=BUILDERS, default="auto",
                        help="siftool (no Apptainer needed) or apptainer (`apptainer build`); auto: apptainer where installed")
    parser.add_argument("--base-image", help="another base (a mirror or private registry)")
    args = parser.parse_args(argv)
    return run_command(lambda: _build_all(args.stacks, args.out, args.builder, args.base_image))


def _build_all(names: Sequence[str], out: Path, builder: str, base_image: str | None) -> int:
    for name in names:
        build(stacks.get(name), out, builder=builder, base_image=base_image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
