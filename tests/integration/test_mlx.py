"""The `mlx` engine through the real `lockstep` command, on MLX's CPU back end: the embedded demo
trained from the `cpu` environment (lockstep hands the run to the `mlx` stack's environment), every
output, kill and resume to the bit, the adapter loaded by mlx-lm, and its PEFT export loaded by
transformers + peft giving the same logits."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from runner import stacks
from runner.errors import EngineError, PreflightError
from runner.stacks import venv as stack_venv
from runner.training import checkpoint
from tests.helpers import REPO_ROOT, nothing_but_preflight, run_lockstep, start_lockstep
from tests.integration.run_checks import PNG_SIGNATURE, assert_merge_keeps_the_outputs, logged_step, wait_until

pytestmark = pytest.mark.slow

MLX_CONFIG = REPO_ROOT / "configs" / "demo-mlx.yaml"
EXIT_REQUEUE = 75
PROMPT = "### Instruction:\nWhat is the capital of France?\n### Response:\n"


@pytest.fixture(scope="module")
def mlx_python() -> Path:
    """The `mlx` stack's environment, as a local run creates it (hash-checked from lockfiles/mlx.txt)."""
    return stack_venv.ensure(stacks.get("mlx"))


@pytest.fixture(scope="module")
def mlx_run(mlx_python, tmp_path_factory):
    """configs/demo-mlx.yaml trained uninterrupted, started from this (cpu) environment."""
    run_dir = tmp_path_factory.mktemp("mlx") / "run"
    result = run_lockstep("train", str(MLX_CONFIG), "--set", f"output_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result.stderr


def in_mlx(python: Path, script: str, *args: str) -> str:
    result = subprocess.run([str(python), "-c", textwrap.dedent(script), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_demo_trains_on_mlx_with_every_output(mlx_run):
    run_dir, stderr = mlx_run
    assert "training in the environment of stack mlx" in stderr and "✓ lock" in stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["engine"] == "mlx" and summary["steps"] == 144 and summary["precision"] == "fp32"
    assert summary["eval_loss_drop"] >= 0.30, summary
    assert summary["peft_export"] == "adapter_peft" and summary["checkpoints_saved"] == 11

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stack"] == "mlx" and manifest["drift"]["clean"], manifest["drift"]
    assert manifest["packages"]["mlx"] and manifest["packages"]["mlx-lm"] and "torch" not in manifest["packages"]

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if row["loss"] is not None]
    assert len(train_rows) == 144 and all(row["tokens_per_s"] > 0 and row["grad_norm"] > 0 and row["memory_mb"] > 0 for row in train_rows)
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == len(rows) + 1
    for name in ("loss", "lr", "memory"):
        assert (run_dir / "plots" / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)

    adapter = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["fine_tune_type"] == "lora" and adapter["lora_parameters"]["rank"] == 16 and adapter["lora_parameters"]["scale"] == 2.0
    peft = json.loads((run_dir / "adapter_peft" / "adapter_config.json").read_text())
    assert peft["peft_type"] == "LORA" and peft["r"] == 16 and peft["lora_alpha"] == 32
    kept = checkpoint.CheckpointStore(run_dir).candidates()
    assert [c.step for c in kept] == [144, 140, 126] and all(checkpoint.verify(c.path) is None for c in kept)
    assert {p.name for p in kept[0].path.iterdir()} == {"COMPLETE.json", "adapters.safetensors", "adapter_config.json",
                                                        "optimizer.safetensors", "trainer_state.json"}


def test_sigterm_then_sigkill_then_resume_gives_the_same_adapter_bit_for_bit(mlx_run, tmp_path):
    reference, _ = mlx_run
    run_dir = tmp_path / "interrupted"
    args = ("train", str(MLX_CONFIG), "--set", f"output_dir={run_dir}")

    # A stop signal to lockstep reaches the trainer in the mlx environment, which checkpoints and exits 75.
    process = start_lockstep(*args, stderr_to=tmp_path / "first.log")
    wait_until(lambda: logged_step(run_dir) >= 30, process, "step 30", timeout=300, pause=0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == EXIT_REQUEUE, (tmp_path / "first.log").read_text()[-3000:]
    stopped_at = checkpoint.CheckpointStore(run_dir).newest_valid()[0]
    assert stopped_at is not None and stopped_at.step >= 30

    # A crash: the trainer itself killed without warning, mid-run.
    process = start_lockstep(*args, stderr_to=tmp_path / "second.log")
    wait_until(lambda: logged_step(run_dir) >= 80, process, "step 80", timeout=300, pause=0.05)
    trainer = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert len(trainer) == 1, trainer
    subprocess.run(["kill", "-KILL", trainer[0]], check=True)
    assert process.wait(timeout=60) == 128 + signal.SIGKILL

    result = run_lockstep(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from step-" in result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["attempts"] == 3 and summary["resumed_from_step"] > stopped_at.step  # the crash kept the checkpoints since
    for name in ("adapter/adapters.safetensors", "adapter_peft/adapter_model.safetensors"):
        assert (run_dir / name).read_bytes() == (reference / name).read_bytes(), f"{name} differs from the uninterrupted run's"
    compared = ("step", "loss", "eval_loss", "lr", "grad_norm")
    trajectory = [[json.loads(line)[key] for key in compared] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = [[json.loads(line)[key] for key in compared] for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert trajectory == expected


def test_the_adapter_loads_with_mlx_lm_and_generates_what_it_learned(mlx_run, mlx_python):
    run_dir, _ = mlx_run
    script = """
        import json, sys
        import mlx_lm
        run, prompt = sys.argv[1], sys.argv[2]
        base = json.load(open(run + "/adapter/adapter_config.json"))["model"]
        tuned = mlx_lm.load(base, adapter_path=run + "/adapter")
        plain = mlx_lm.load(base)
        print(json.dumps([mlx_lm.generate(*model, prompt, max_tokens=24) for model in (tuned, plain)]))
    """
    tuned, plain = json.loads(in_mlx(mlx_python, script, str(run_dir), PROMPT).splitlines()[-1])
    assert tuned.strip() == "The capital of France is Paris."  # the demo data's answer, learned
    assert "Paris" not in plain  # the random base model knows nothing


def test_lockstep_generate_on_an_mlx_run_from_this_environment(mlx_run):
    """This environment has no MLX: `lockstep generate` answers in the mlx stack's environment."""
    run_dir, _ = mlx_run
    result = run_lockstep("generate", str(run_dir), "--prompt", PROMPT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "The capital of France is Paris."


def test_the_peft_export_and_the_merged_model_give_mlxs_logits_in_transformers(mlx_run, mlx_python, tmp_path):
    torch = pytest.importorskip("torch")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from runner.demo.tiny_model import ensure_built

    run_dir, _ = mlx_run
    tokens = [[5, 17, 42, 99, 250, 7, 311, 64, 128, 3]]
    script = """
        import json, sys
        import mlx.core as mx, mlx_lm, numpy as np
        run, tokens, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
        base = json.load(open(run + "/adapter/adapter_config.json"))["model"]
        model, _ = mlx_lm.load(base, adapter_path=run + "/adapter")
        np.save(out, np.array(model(mx.array(tokens)).astype(mx.float32)))
    """
    in_mlx(mlx_python, script, str(run_dir), json.dumps(tokens), str(tmp_path / "mlx.npy"))
    expected = np.load(tmp_path / "mlx.npy")

    base = AutoModelForCausalLM.from_pretrained(ensure_built(), torch_dtype=torch.float32)
    with torch.no_grad():
        plain = base(torch.tensor(tokens)).logits.numpy()
        tuned = PeftModel.from_pretrained(base, run_dir / "adapter_peft")(torch.tensor(tokens)).logits.numpy()
    assert np.abs(expected - plain).max() > 1.0  # the adapter matters...
    assert np.abs(expected - tuned).max() < 1e-3  # ...and transformers + peft apply it as MLX does
    merged = assert_merge_keeps_the_outputs(run_dir, run_dir / "adapter_peft").numpy()  # lockstep merge uses the export
    assert np.abs(expected - merged).max() < 1e-3


def test_qlora_with_gradient_checkpointing_and_chosen_target_modules(mlx_python, tmp_path):
    """quantization: 4bit quantizes the decoder layers' linear weights (those whose width the group size divides) under
    the adapters; the run still learns, and the adapter covers only the modules asked for."""
    run_dir = tmp_path / "qlora"
    settings = ["quantization=4bit", "train.gradient_checkpointing=true", "lora.target_modules=[q_proj,v_proj]", "train.max_steps=20",
                "train.eval_every_percent=50", f"output_dir={run_dir}"]
    result = subprocess.run([str(mlx_python), "-m", "runner.job", str(MLX_CONFIG), *[f"--set={s}" for s in settings]],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    # tiny-llama: q, k, v, o, gate and up (input width 128) in each of 2 layers; down_proj's input width 344 is not a multiple of 64.
    assert summary["quantization"] == "4bit" and summary["quantized_layers"] == 12
    assert summary["eval_loss_drop"] > 0.2, summary
    keys = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["lora_parameters"]["keys"]
    assert keys == ["self_attn.q_proj", "self_attn.v_proj"]
    assert json.loads((run_dir / "adapter_peft" / "adapter_config.json").read_text())["target_modules"] == ["q_proj", "v_proj"]


def test_target_modules_the_model_does_not_have_are_named_with_the_ones_it_has(mlx_python, tmp_path):
    result = subprocess.run([str(mlx_python), "-m", "runner.job", str(MLX_CONFIG), "--set=lora.target_modules=[c_attn]",
                             f"--set=output_dir={tmp_path / 'run'}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == EngineError.exit_code, result.stderr[-3000:]
    assert "lora.target_modules ['c_attn'] names no linear layer of this model; its layers have down_proj, gate_proj" in result.stderr


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (("--set", "resources.processes_per_node=2"), "resources.nodes=1 x processes_per_node=2: it trains in one process"),
        (("--set", "train.deterministic=true"), "train.deterministic: MLX has no such switch"),
        (("--backend", "docker"), "engine mlx runs with --backend local only, not docker"),
    ],
)
def test_settings_mlx_cannot_honour_are_refused_before_anything_runs(tmp_path, extra, said):
    run_dir = tmp_path / "refused"
    result = run_lockstep("train", str(MLX_CONFIG), "--set", f"output_dir={run_dir}", *extra)
    assert result.returncode == PreflightError.exit_code, result.stderr[-3000:]
    assert "✗ engine" in result.stderr and said in result.stderr
    assert nothing_but_preflight(run_dir)


@pytest.mark.parametrize("ending", ["train.max_steps=12", pytest.param("train.epochs=0.25", marks=pytest.mark.extended)],
                         ids=["max_steps", "epochs"])  # both endings reach the same code; `make test` runs one
def test_killed_mid_run_and_after_the_final_checkpoint_a_mid_epoch_run_ends_as_an_uninterrupted_one(mlx_python, tmp_path, ending):
    """12 steps, a quarter of an epoch: a resume at the last step only writes the outputs (no thirteenth step)."""

    def start(run_dir: Path, name: str) -> subprocess.Popen[bytes]:
        settings = [ending, "checkpoint.every_percent=25", f"output_dir={run_dir}"]
        with (tmp_path / f"{name}.log").open("wb") as log:
            return subprocess.Popen([str(mlx_python), "-m", "runner.job", str(MLX_CONFIG), *[f"--set={s}" for s in settings]],
                                    cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log)

    reference = tmp_path / "reference"
    assert start(reference, "reference").wait(timeout=300) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    run_dir = tmp_path / "killed"
    first = start(run_dir, "first")
    wait_until(lambda: logged_step(run_dir) >= 5, first, "step 5", timeout=300)
    first.kill()
    first.wait()
    second = start(run_dir, "second")
    wait_until(lambda: (run_dir / "checkpoints" / "step-00000012").is_dir(), second, "the final checkpoint", timeout=300, pause=0.001)
    second.kill()
    second.wait()
    if (run_dir / "summary.json").exists():  # the kill came too late: the same state, made by hand
        (run_dir / "summary.json").unlink()
    assert start(run_dir, "final").wait(timeout=300) == 0, (tmp_path / "final.log").read_text()[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["attempts"] == 3
    assert summary["train_tokens"] == json.loads((reference / "summary.json").read_text())["train_tokens"]
    for name in ("adapter/adapters.safetensors", "adapter/adapter_config.json", "adapter_peft/adapter_model.safetensors"):
        assert (run_dir / name).read_bytes() == (reference / name).read_bytes(), f"{name} differs from the uninterrupted run's"
    compared = ("step", "loss", "eval_loss", "lr", "grad_norm")
    rows = [[json.loads(line)[key] for key in compared] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows == [[json.loads(line)[key] for key in compared] for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert "step 12 of 12 is done: writing the run's outputs from step-00000012" in (tmp_path / "final.log").read_text()
