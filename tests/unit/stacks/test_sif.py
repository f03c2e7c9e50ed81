"""SIF files written with the reference tools (siftool, mksquashfs) from a small root filesystem, read back by
runner.stacks.sif_file and checked by runner.stacks.sif.verify, which must notice a SIF that is not the image."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from runner.errors import ImageError
from runner.stacks import containers, sif, sif_file
from tests.helpers import skip_or_fail

INFO = containers.ImageInfo(id="sha256:" + "ab" * 32, size=None, labels={"io.lockstep.stack": "cpu", "b": "it's $HOME"},
                            layers=(), env=("PATH=/opt/venv/bin:/usr/bin", "PYTHONPATH=/opt/lockstep", "ODD=a 'b' $c"),
                            entrypoint=("python", "-m", "runner.job"), cmd=())
EPOCH = 1700000000


@pytest.fixture
def rootfs(tmp_path):
    missing = [tool for tool in ("siftool", "mksquashfs", "unsquashfs") if shutil.which(tool) is None]
    if missing:
        skip_or_fail(f"{', '.join(missing)} not installed (apt-get install siftool squashfs-tools)")
    root = tmp_path / "rootfs"
    (root / "opt" / "lockstep" / "runner").mkdir(parents=True)
    (root / "opt" / "lockstep" / "runner" / "__init__.py").write_text("VERSION = 1\n")
    site = root / "opt" / "venv" / "lib" / "python3.11" / "site-packages" / "torch"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("__version__ = '2.13.0+cpu'\n")
    (root / "opt" / "venv" / "bin").mkdir()
    (root / "opt" / "venv" / "bin" / "python").symlink_to("/usr/bin/python3.11")
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text("ID=debian\n")
    (root / "tmp").mkdir()  # an empty directory counts too
    return root


def test_a_sif_holds_the_root_filesystem_as_a_squashfs_primary_partition_with_definition_and_labels(rootfs, tmp_path):
    target = tmp_path / "image.sif"
    sif.write_sif(rootfs, target, tag="lockstep/cpu:0123", info=INFO, epoch=EPOCH)
    listed = subprocess.run(["siftool", "list", str(target)], capture_output=True, text=True, check=True).stdout
    assert "Def.FILE" in listed and "JSON.Labels" in listed and "FS (Squashfs/*System/amd64)" in listed
    image = sif_file.read(target)
    kinds = [d.data_type for d in image.descriptors]
    assert kinds == ["deffile", "labels", "partition"] and image.arch == "amd64"
    assert json.loads(image.read(image.descriptors[1])) == INFO.labels
    assert "Bootstrap: oci-archive\nFrom: lockstep-cpu-0123.oci.tar\n" in image.read(image.descriptors[0]).decode()
    digest = sif.verify(target, rootfs)
    assert digest == image.sha256(image.primary_system())
    assert not target.with_name("image.sif.partial").exists()

    # What Apptainer's runtime reads from the partition: the ENV script, quoted for sh, and the runscript.
    unpacked = tmp_path / "unpacked"
    image.extract(image.primary_system(), tmp_path / "partition.squashfs")
    subprocess.run(["unsquashfs", "-d", str(unpacked), "-quiet", "-no-progress", str(tmp_path / "partition.squashfs")], check=True)
    env_script = unpacked / ".singularity.d" / "env" / "10-docker2singularity.sh"
    shown = subprocess.run(["sh", "-c", '. "$0"; printf "%s|%s" "$PYTHONPATH" "$ODD"', str(env_script)], capture_output=True, text=True)
    assert shown.stdout == "/opt/lockstep|a 'b' $c"
    assert (unpacked / ".singularity.d" / "runscript").read_text().endswith('exec python -m runner.job "$@"\n')
    assert sif.paths(unpacked) - sif.paths(rootfs) == {".singularity.d", *(f".singularity.d/{name}" for name in (
        "env", "env/10-docker2singularity.sh", "runscript", "labels.json", "Singularity")), "ch", "ch/environment"}
    assert (unpacked / "ch" / "environment").read_text() == "PATH=/opt/venv/bin:/usr/bin\nPYTHONPATH=/opt/lockstep\nODD=a 'b' $c\n"


def test_the_same_image_and_epoch_give_the_same_partition_and_only_the_header_differs(rootfs, tmp_path):
    first, second = tmp_path / "a.sif", tmp_path / "b.sif"
    sif.write_sif(rootfs, first, tag="lockstep/cpu:0123", info=INFO, epoch=EPOCH)
    sif.write_sif(rootfs, second, tag="lockstep/cpu:0123", info=INFO, epoch=EPOCH)
    a, b = sif_file.read(first), sif_file.read(second)
    assert a.sha256(a.primary_system()) == b.sha256(b.primary_system())
    assert a.id != b.id  # siftool's random id: the one documented difference, with its times


def test_verify_names_a_file_the_sif_lacks_and_a_file_whose_bytes_differ(rootfs, tmp_path):
    target = tmp_path / "image.sif"
    sif.write_sif(rootfs, target, tag="lockstep/cpu:0123", info=INFO, epoch=EPOCH)
    (rootfs / "etc" / "added-later").write_text("x")
    with pytest.raises(ImageError, match=r"lacks files of the image, e\.g\. etc/added-later"):
        sif.verify(target, rootfs)
    (rootfs / "etc" / "added-later").unlink()
    (rootfs / "opt" / "venv" / "lib" / "python3.11" / "site-packages" / "torch" / "__init__.py").write_text("changed\n")
    with pytest.raises(ImageError, match=r"site-packages/torch/__init__\.py is not the image's"):
        sif.verify(target, rootfs)


def test_a_file_that_is_not_a_sif_is_refused(tmp_path):
    bogus = tmp_path / "not.sif"
    bogus.write_bytes(b"\0" * 200)
    with pytest.raises(ImageError, match=r"not a usable SIF: .*no SIF_MAGIC"):
        sif.verify(bogus, tmp_path)
