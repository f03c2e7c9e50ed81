"""The benchmarks' arithmetic: parameter and FLOP counts, MFU, interleaved rounds and ratios, and the results page."""

from __future__ import annotations

import json

import pytest

from tests.bench import flops, measure, results

TINY = flops.Shape(hidden=64, intermediate=172, layers=2, heads=4, kv_heads=2, vocab=300)


def test_published_shapes_have_their_published_sizes():
    assert flops.total_params(flops.LLAMA_3_2_1B) == 1_235_814_400
    assert flops.total_params(flops.LLAMA_3_1_8B) == 8_030_261_248
    # peft's trainable parameter counts for r=16 on all-linear
    assert flops.lora_params(flops.LLAMA_3_2_1B, 16) == 11_272_192
    assert flops.lora_params(flops.LLAMA_3_1_8B, 16) == 41_943_040


@pytest.mark.parametrize("shape", [TINY, flops.LLAMA_3_2_1B, flops.LLAMA_3_1_8B], ids=["tiny", "1b", "8b"])
def test_counts_agree_with_transformers_and_peft(shape):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    with torch.device("meta"):  # sizes only, no memory
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape.llama_config()))
    assert sum(p.numel() for p in model.parameters()) == flops.total_params(shape)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert linear == flops.matmul_params(shape)  # the output layer counts even when tied to the embeddings
    adapted = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert sum(p.numel() for p in adapted.parameters() if p.requires_grad) == flops.lora_params(shape, 8)


def test_full_training_is_six_n_plus_attention():
    n = flops.matmul_params(TINY)
    attention = 12 * TINY.layers * 128 * TINY.heads * TINY.d_head
    assert flops.train_flops_per_token(TINY, 128, lora_r=None) == 6 * n + attention


def test_lora_saves_the_frozen_weights_gradients_only():
    n, adapters = flops.matmul_params(TINY), flops.lora_params(TINY, 16)
    attention = 12 * TINY.layers * 64 * TINY.heads * TINY.d_head
    assert flops.train_flops_per_token(TINY, 64, lora_r=16) == 4 * (n + adapters) + 2 * adapters + attention
    shape = flops.LLAMA_3_2_1B  # adapters small against the model: about 2/3 of full training's FLOPs
    share = flops.train_flops_per_token(shape, 2048, lora_r=16) / flops.train_flops_per_token(shape, 2048, lora_r=None)
    assert 0.66 < share < 0.72


def test_mfu_of_the_8b_shape():
    assert flops.matmul_params(flops.LLAMA_3_1_8B) == 32 * 218_103_808 + 128_256 * 4096  # layers + output layer
    per_token = flops.train_flops_per_token(flops.LLAMA_3_1_8B, 2048, lora_r=16)
    assert per_token == 4 * (7_504_658_432 + 41_943_040) + 2 * 41_943_040 + 12 * 32 * 2048 * 32 * 128  # ~3.35e10
    peak = flops.peak_flops("NVIDIA H100 80GB HBM3")
    assert peak == 989e12
    assert flops.mfu(10_000, per_token, peak) == pytest.approx(10_000 * per_token / 989e12)
    assert flops.mfu(10_000, per_token, None) is None


def test_peak_lookup(monkeypatch):
    monkeypatch.delenv(flops.PEAK_ENV, raising=False)
    assert flops.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert flops.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert flops.peak_flops("NVIDIA L40S") == 362e12
    assert flops.peak_flops("NVIDIA L4") == 121e12
    assert flops.peak_flops("Some Future GPU") is None
    monkeypatch.setenv(flops.PEAK_ENV, "100")
    assert flops.peak_flops("Some Future GPU") == 100e12


def test_interleaved_rounds_alternate_the_order():
    calls = []
    found = measure.interleaved({"a": lambda i: calls.append(("a", i)) or i, "b": lambda i: calls.append(("b", i)) or 10 * i}, 3)
    assert calls == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert found == {"a": [0, 1, 2], "b": [0, 10, 20]}


def test_ratio_median_and_spread():
    assert measure.median([3.0, 1.0, 2.0]) == 2.0
    assert measure.ratio(97.0, 100.0) == 0.97
    assert measure.ratio(1.0, 0.0) is None
    assert measure.spread([9.0, 10.0, 11.0]) == 0.2


def test_other_processes_share_is_small_for_our_own_work():
    watch = measure.OtherProcesses()
    sum(i * i for i in range(2_000_000))  # CPU time of this process is not counted as others'
    shares = watch.shares()
    if shares is None:
        pytest.skip("no /proc/stat here")
    assert set(shares) == {"others_cpu_share", "steal_share"} and 0 <= shares["others_cpu_share"] <= 1


def test_a_busy_machine_is_named_on_the_page():
    busy = _run("2026-12-01T10:00:00", {"tokens_per_s_ratio": 1.0, "others_cpu_share": 0.4})
    section = results.render(busy, None)
    assert "other processes took up to 40% of the machine's CPU" in section and "| others' CPU |" in section
    assert "other processes took" not in results.render(_run("2026-12-01T10:00:00", {"others_cpu_share": 0.02}), None)


def _run(when, extra, *, name="test_lockstep_against_a_bare_trl_script[case]", group=None, machine=None):
    return {
        "datetime": when,
        "machine_info": machine or {"node": "box", "cpu": {"brand_raw": "Some CPU", "count": 2}, "ram_gib": 24.0, "python_version": "3.11.7",
                                    "system": "Linux", "machine": "x86_64", "lockstep": {"torch": "2.13.0", "gpu": None}},
        "commit_info": {"id": "0123456789abcdef", "dirty": True},
        "lockstep": {"command": "nox -s bench", "skipped": [{"test": f"tests/bench/test_gpu_throughput.py::test_gpu_throughput[{case}]",
                                                             "reason": "no CUDA GPU visible"} for case in ("a-hf", "b-hf")]},
        "benchmarks": [{"name": name, "fullname": f"tests/bench/test_training_overhead.py::{name}", "group": group,
                        "stats": {"median": 1.5}, "extra_info": extra}],
    }


def test_the_results_page_shows_numbers_ratios_and_the_change(tmp_path):
    storage = tmp_path / "history" / "Linux-CPython-3.11-64bit"
    storage.mkdir(parents=True)
    previous = _run("2026-11-30T10:00:00", {"tokens_per_s_ratio": 0.90, "lockstep_tokens_per_s": 1000.0})
    latest = _run("2026-12-01T10:00:00", {"tokens_per_s_ratio": 0.99, "lockstep_tokens_per_s": 1100.0})
    (storage / "0001_abc_20261130_100000.json").write_text(json.dumps(previous))
    (storage / "0002_abc_20261201_100000.json").write_text(json.dumps(latest))  # the autosave of the latest run itself
    latest_file = tmp_path / "latest.json"
    latest_file.write_text(json.dumps(latest))
    assert results.find_previous(latest, tmp_path / "history") == previous

    section = results.render(latest, previous)
    assert "2026-12-01" in section and "Some CPU" in section and "2 cores" in section and "24 GiB" in section
    assert "nox -s bench" in section and "0123456789ab" in section
    assert "| case | lockstep tokens/s | ratio (target >= 0.98) | change vs previous |" in section
    assert "| case | 1,100 | 0.99 | lockstep tokens/s +10.0%; ratio (target >= 0.98) +10.0% |" in section
    assert "not measured**: `test_gpu_throughput[a-hf, b-hf]`: no CUDA GPU visible" in section
    assert results.render(latest, None).rstrip().endswith("| 1,100 | 0.99 | - |")  # no earlier run: no change to show


def test_the_generated_section_replaces_only_itself(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nIntro.\n\n## Hand-measured\n\n| a |\n")
    results.write_section(page, "first\n")
    text = page.read_text()
    assert text.index("Intro.") < text.index(results.BEGIN) < text.index("first") < text.index(results.END) < text.index("## Hand-measured")
    results.write_section(page, "second\n")
    text = page.read_text()
    assert "first" not in text and "second" in text and text.count(results.BEGIN) == 1 and "| a |" in text
