"""The sbatch script of `--backend slurm`, compared with golden files, and hostile paths in it.

Regenerate the golden files after an intended change: LOCKSTEP_REGEN_GOLDEN=1 pytest tests/unit/backends/test_slurm_script.py
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from runner import config as config_module
from runner.backends.slurm import SCRIPT, SNAPSHOT, Slurm
from runner.spec import JobSpec
from tests.helpers import hostile_project

HOSTILE = "we ird $dir; 'q' \"dq\" %j"
GPU_RUN = ["resources.nodes=2", "resources.gpus_per_node=4", "resources.processes_per_node=4", "resources.gpu_type=a100",
           "resources.cpus_per_process=8", "resources.memory_gb=480", "resources.time_limit=1d12h", "slurm.partition=gpu",
           "slurm.account=proj-42", "slurm.image=/shared/images/lockstep cpu.sif", "slurm.setup=[module load cuda/12.1]",
           "slurm.sbatch_args=[--mail-type=END]", "distributed.env.NCCL_DEBUG=WARN", "distributed.env.NCCL_IB_DISABLE=0"]


def spec(tmp_path: Path, overrides: list[str]) -> JobSpec:
    config_path = hostile_project(tmp_path, HOSTILE, "runs/my run")
    cwd = config_path.parent
    return JobSpec(config=config_module.load(config_path, overrides), config_path=config_path, overrides=tuple(overrides),
                   cwd=cwd, submission_id="20261123T120000000000Z")


def test_two_gpu_nodes_in_apptainer_match_the_golden_script(tmp_path, golden):
    submission = Slurm().prepare(spec(tmp_path, GPU_RUN))
    text = submission.files[SCRIPT] + "# argv: " + shlex.join(submission.argv) + "\n"
    golden("slurm-apptainer-2x4gpu.sbatch", text.replace(str(tmp_path), "{tmp}"))


def test_site_python_without_container_matches_the_golden_script(tmp_path, golden):
    run = spec(tmp_path, ["slurm.container=none", "slurm.python=/opt/site/bin/python", "resources.processes_per_node=2"])
    golden("slurm-none-cpu.sbatch", Slurm().prepare(run).files[SCRIPT].replace(str(tmp_path), "{tmp}"))


def test_podman_runtime_passes_the_scheduler_environment_and_mounts(tmp_path):
    script = Slurm().prepare(spec(tmp_path, ["slurm.container=podman", "slurm.image=lockstep/cpu:0123456789ab"])).files[SCRIPT]
    step = next(line for line in script.splitlines() if line.startswith("srun "))
    words = shlex.split(step.removesuffix(" &"))
    assert words[words.index("run") - 1] == "podman" and "--network=host" in words and "--env=SLURM_*" in words
    assert "--entrypoint=/opt/venv/bin/python" in words and words[words.index("lockstep/cpu:0123456789ab") + 1] == "-m"


def test_hostile_paths_stay_single_words_and_the_script_parses(tmp_path):
    run = spec(tmp_path, GPU_RUN)
    submission = Slurm().prepare(run)
    script = submission.files[SCRIPT]
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    step = next(line for line in script.splitlines() if line.startswith("srun "))
    words = shlex.split(step.removesuffix(" &").replace('"$first_node"', "node1"))
    image = "/shared/images/lockstep cpu.sif"
    apptainer = words[words.index("apptainer"):words.index("runner.job.launch") + 1]
    assert apptainer == ["apptainer", "exec", "--nv", f"--bind={run.cwd}",
                         f"--bind={tmp_path / 'data $shared' / 'train.jsonl'}",  # data outside the working directory
                         f"--env=LOCKSTEP_IMAGE={image}", "--env=LOCKSTEP_IMAGE_ID=sha256:unknown",
                         "--env=LOCKSTEP_CONTAINER_RUNTIME=apptainer", "--env=PYTHONSAFEPATH=1", f"--pwd={run.cwd}", image,
                         "/opt/venv/bin/python", "-m", "runner.job.launch"]
    assert words[-3:] == [str(run.job_dir / SNAPSHOT), "--backend", "slurm"]
    assert "--master-addr=node1" in words
    # sbatch expands % in --output: the literal one in the directory is doubled, %j is kept
    output = next(arg for arg in submission.argv if arg.startswith("--output="))
    assert output == f"--output={str(run.job_dir).replace('%', '%%')}/slurm-%j.out"
    assert "--mail-type=END" in submission.argv and "#SBATCH --job-name=lockstep-my_run" in script


def test_the_snapshot_is_the_resolved_config(tmp_path):
    run = spec(tmp_path, GPU_RUN)
    snapshot = Slurm().prepare(run).files[SNAPSHOT]
    import yaml

    assert yaml.safe_load(snapshot) == run.config.to_dict()


def test_bind_paths_apptainer_cannot_express_are_refused(tmp_path):
    from runner.errors import BackendError

    with pytest.raises(BackendError, match="comma, colon or newline"):
        Slurm().prepare(spec(tmp_path, ["slurm.image=/x.sif", "output_dir=/tmp/a,b"]))


def test_a_gpu_job_in_charliecloud_adds_the_node_driver_libraries_first(tmp_path):
    run = spec(tmp_path, [*GPU_RUN, "slurm.container=charliecloud"])
    script = Slurm().prepare(run).files[SCRIPT]
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    lines = script.splitlines()
    fromhost = next(index for index, line in enumerate(lines) if line.startswith("ch-fromhost "))
    assert shlex.split(lines[fromhost])[:3] == ["ch-fromhost", "--nvidia", "/shared/images/lockstep cpu.ch"]
    assert fromhost < next(index for index, line in enumerate(lines) if line.startswith("srun "))
    (tmp_path / "cpu").mkdir()
    cpu_only = Slurm().prepare(spec(tmp_path / "cpu", ["slurm.container=charliecloud", "slurm.image=/x.sif"])).files[SCRIPT]
    assert "ch-fromhost" not in cpu_only
