"""`nox -s sif -- STACK`: the stack's image for Apptainer, built from the same OCI image.

The image is built (or found) as for `nox -s build`, written to a single-file archive in
build/sif/, and `apptainer build` turns that archive into a SIF: here when apptainer is
installed, otherwise on any machine that has it, with the script written beside the
archive. Nothing is rebuilt from the Dockerfile, so the SIF holds the same bytes as the
image the other backends run. Sites that build SIFs from source use docker/lockstep.def.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runner import stacks
from runner.errors import ImageError, run_command
from runner.stacks import containers, images
from runner.util import console, shell


@dataclass(frozen=True)
class SifPlan:
    archive: Path  # the image as a single file (OCI or docker archive)
    sif: Path
    script: Path  # runs `apptainer build` from the archive, from any directory
    build_argv: tuple[str, ...]  # relative to the script's directory


def plan(tag: str, scheme: str, out_dir: Path) -> SifPlan:
    stem = tag.replace("/", "-").replace(":", "-")  # lockstep/cpu:0123abcd -> lockstep-cpu-0123abcd (sif.out_name's stem)
    archive = out_dir / f"{stem}.{'oci' if scheme == 'oci-archive' else 'docker'}.tar"
    sif = out_dir / f"{stem}.sif"
    return SifPlan(archive=archive, sif=sif, script=out_dir / f"{stem}.build-sif.sh",
                   build_argv=("apptainer", "build", "--force", sif.name, f"{scheme}://{archive.name}"))


def script_text(sif_plan: SifPlan, tag: str) -> str:
    return shell.script(
        [sif_plan.build_argv],
        comment=f"Build the Apptainer image {sif_plan.sif.name} from {tag} ({sif_plan.archive.name}).\n"
                "Run it with: apptainer run --nv --bind RUN_DIR IMAGE.sif CONFIG [--set KEY=VALUE ...]",
        cd_to_script_dir=True,
    )


def make(stack: stacks.Stack, out_dir: Path, *, base_image: str | None = None) -> SifPlan:
    tool = containers.find("build")
    built = images.build(stack, base_image=base_image, tool=tool)
    sif_plan = plan(built.spec.tag, tool.archive_scheme, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    export_argv = tool.export_argv(built.spec.tag, sif_plan.archive)
    sif_plan.archive.unlink(missing_ok=True)  # podman refuses to overwrite an archive
    if subprocess.run(export_argv).returncode != 0:
        raise ImageError(f"could not write {sif_plan.archive}; {tool.name} said why above")
    sif_plan.script.write_text(script_text(sif_plan, built.spec.tag))
    sif_plan.script.chmod(0o755)
    console.say(f"wrote {sif_plan.archive} ({sif_plan.archive.stat().st_size / 1e9:.2f} GB) and {sif_plan.script}")
    apptainer = shutil.which("apptainer") or shutil.which("singularity")
    if apptainer is None:
        console.say(f"apptainer is not installed here: copy both files to a machine that has it and run `sh {sif_plan.script.name}`")
    elif subprocess.run([apptainer, *sif_plan.build_argv[1:]], cwd=out_dir).returncode != 0:
        raise ImageError(f"apptainer could not build {sif_plan.sif}; it said why above")
    else:
        console.say(f"built {sif_plan.sif}")
    return sif_plan



def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nox -s sif --", description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="+")
    parser.add_argument("--out", type=Path, default=stacks.LOCKFILES.parent / "build" / "sif", help="directory (default: build/sif)")
    parser.add_argument("--base-image", help="another base (a mirror or private registry)")
    args = parser.parse_args(argv)
    return run_command(lambda: _make_all(args.stacks, args.out, args.base_image))


def _make_all(names: Sequence[str], out: Path, base_image: str | None) -> int:
    for name in names:
        make(stacks.get(name), out, base_image=base_image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
