"""GPU throughput: tokens/s and MFU of Llama-3.2-1B- and Llama-3.1-8B-shaped models, LoRA and QLoRA, per engine.

The models have the published architectures with random weights (no hub access needed),
written once per session in Hugging Face format with the demo's tokenizer (its ids are a
subset of the vocabulary). Each run trains through `runner.job.run.main`, as every backend
does, on rows of exactly `SEQ_LEN` tokens (no padding), bf16, LoRA r16 on every projection,
one checkpoint at the end. tokens/s is the median of the per-step rates after `WARMUP_STEPS`
(compilation, allocator growth and the final checkpoint left out); MFU uses the formula in
tests/bench/flops.py. Every step must have a finite, non-zero gradient norm.

Marker `gpu`: skipped, saying why, without a CUDA device; QLoRA is skipped without
bitsandbytes; an engine lockstep does not implement is skipped naming the ones it does.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import yaml

from runner import engines
from runner.job import run as job_run
from runner.training import metrics
from tests.bench import flops, measure

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible (torch.cuda.is_available() is False)"),
]

SEQ_LEN = 2048
STEPS = 24
WARMUP_STEPS = 6
LORA_R = 16
SHAPES = {
    "llama-3.2-1b": (flops.LLAMA_3_2_1B, 8),  # (shape, per-device batch)
    "llama-3.1-8b": (flops.LLAMA_3_1_8B, 2),
}


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    """A function giving the directory of a shape's random-weight model, built on first use."""
    built: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in built:
            built[name] = _build_model(name, tmp_path_factory.mktemp(name))
        return built[name]

    yield get
    for path in built.values():
        shutil.rmtree(path, ignore_errors=True)  # an 8B model in bf16 is 16 GB


@pytest.mark.parametrize("engine", ["hf", "unsloth"])
@pytest.mark.parametrize("method", ["lora", "qlora"])
@pytest.mark.parametrize("shape_name", SHAPES)
def test_gpu_throughput(benchmark, tmp_path, random_models, shape_name, method, engine):
    if engine not in engines.ENGINES:
        pytest.skip(f"engine {engine} is not in this release of lockstep (engines: {', '.join(engines.ENGINES)})")
    if method == "qlora":
        pytest.importorskip("bitsandbytes", reason="QLoRA (quantization: 4bit) needs bitsandbytes")
    shape, batch = SHAPES[shape_name]
    model_dir = random_models(shape_name)
    run_dir = tmp_path / "run"
    run_config = _config(tmp_path, model_dir, run_dir, batch=batch, quantization="4bit" if method == "qlora" else "none", engine=engine)
    torch.cuda.reset_peak_memory_stats()

    summary = benchmark.pedantic(job_run.main, args=(run_config,), rounds=1, iterations=1)
    rows = [row for row in metrics.read(run_dir) if row["loss"] is not None]
    assert summary["steps"] == STEPS and len(rows) == STEPS
    assert all(row["grad_norm"] is not None and math.isfinite(row["grad_norm"]) and row["grad_norm"] > 0 for row in rows), rows
    steady = [row["tokens_per_s"] for row in rows if row["step"] > WARMUP_STEPS]
    tokens_per_s = measure.median(steady)
    per_token = flops.train_flops_per_token(shape, SEQ_LEN, lora_r=LORA_R)
    device = torch.cuda.get_device_name()
    peak = flops.peak_flops(device)
    utilisation = flops.mfu(tokens_per_s, per_token, peak)
    report = {
        "device": device,
        "engine": summary["engine"],
        "method": method,
        "params": flops.total_params(shape),
        "trainable_params": flops.lora_params(shape, LORA_R),
        "seq_len": SEQ_LEN,
        "batch": batch,
        "steps": STEPS,
        "tokens_per_s": round(tokens_per_s, 1),
        "tokens_per_s_whole_loop": summary["tokens_per_s"],
        "flops_per_token": per_token,
        "peak_tflops": peak / 1e12 if peak else None,
        "mfu": round(utilisation, 4) if utilisation is not None else None,
        "grad_norm_first": rows[0]["grad_norm"],
        "grad_norm_last": rows[-1]["grad_norm"],
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }
    benchmark.extra_info.update(report)
    shown = f"{report['mfu']:.1%}" if report["mfu"] is not None else f"unknown (no peak for {device}; set {flops.PEAK_ENV})"
    print(f"\n{shape_name} {method} {engine} on {device}: {tokens_per_s:,.0f} tokens/s, MFU {shown}, "
          f"grad norm {rows[0]['grad_norm']:.3g} -> {rows[-1]['grad_norm']:.3g}, {report['peak_memory_gib']} GiB")


def _build_model(name: str, out_dir) -> str:
    """The shape's LlamaForCausalLM with random bf16 weights, saved with the demo's tokenizer."""
    import transformers

    from runner.demo.tiny_model import ensure_built
    from runner.engines.hf_compat import dtype_argument

    shape, _ = SHAPES[name]
    tokenizer = transformers.AutoTokenizer.from_pretrained(ensure_built())
    config = transformers.LlamaConfig(**shape.llama_config(
        max_position_embeddings=SEQ_LEN, rope_theta=500000.0, rms_norm_eps=1e-5, initializer_range=0.02,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config, **dtype_argument(torch.bfloat16))
    assert sum(p.numel() for p in model.parameters()) == flops.total_params(shape)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    torch.cuda.empty_cache()
    return str(out_dir)


def _config(tmp_path, model_dir: str, run_dir, *, batch: int, quantization: str, engine: str):
    from runner import config
    from runner.demo.tiny_model import training_texts

    # Rows of at least SEQ_LEN tokens (the demo's texts, repeated), cut to SEQ_LEN by the run: no padding.
    text = " ".join(training_texts())
    while len(text) < SEQ_LEN * 8:
        text += " " + text
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": text[offset:] + text[:offset]}) + "\n" for offset in range(0, 64 * 97, 97)))
    settings = {
        "model": {"name_or_path": model_dir},
        "data": {"train": str(train), "format": "text"},
        "lora": {"r": LORA_R, "alpha": 2 * LORA_R, "dropout": 0.0, "target_modules": ["all-linear"]},
        "quantization": quantization,
        "train": {"max_steps": STEPS, "per_device_batch_size": batch, "learning_rate": 1e-4, "max_seq_len": SEQ_LEN,
                  "precision": "bf16", "warmup_ratio": 0.0},
        "checkpoint": {"every_percent": 100},
        "engine": engine,
        "output_dir": str(run_dir),
    }
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(settings))
    return config.load(path, ())
