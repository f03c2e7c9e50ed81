"""Training overhead: `lockstep train` against the same fine-tune written as a bare trl script (tests/bench/bare_trl.py).

Both run as processes of this environment's Python, on the same model files, data, tokens,
batch, steps, LoRA adapter, optimizer, schedule, precision and evaluations, in alternating
order. Three variants: lockstep as configured, checkpointing at its default (every 10% of the
steps and the last one), with its metrics file, manifest and report; lockstep with one
checkpoint at the end (`checkpoint.every_percent=100`), which isolates what the periodic
checkpoints cost; and the bare script, which saves nothing. Throughput is non-padding training
tokens / trainer.train() wall time, the same definition everywhere. Reported: the ratio of
medians lockstep / bare (target >= 0.98; step ratio >= 0.99), the same with one checkpoint, the share of throughput
the periodic checkpoints cost (more than the time inside the saves: the steps after a save run
slower too), the ratio of the median single-step throughputs (robust to bursts of load from
other processes), and the time from process start to the first training step.

Not a timed test: it asserts that both sides trained the same thing (steps, tokens, loss,
non-zero gradient norm), not how fast.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner import config
from runner.models import load_tokenizer, resolve_model
from runner.training import data
from runner.training.schedule import total_steps
from tests.bench import measure
from tests.helpers import DEMO_CONFIG, REPO_ROOT

BARE_SCRIPT = Path(__file__).with_name("bare_trl.py")
TARGET_RATIO = 0.98
ONE_CHECKPOINT = "checkpoint.every_percent=100"  # lockstep without its periodic checkpoints: only the last step's
CASES = {
    "tiny-llama (demo)": (),
    "small-llama": ("model.name_or_path=builtin:small-llama", "train.max_steps=30", "train.learning_rate=1e-3"),
    "SmolLM2-135M-Instruct (real)": measure.SMOLLM2,
}


@pytest.mark.parametrize("case", CASES)
def test_lockstep_against_a_bare_trl_script(benchmark, tmp_path, case):
    overrides = CASES[case]
    run_config = config.load(DEMO_CONFIG, (f"output_dir={tmp_path / 'unused'}", *overrides))
    bare_args = _bare_arguments(run_config)
    count = measure.rounds()

    def lockstep(label: str, *extra: str):
        def run_once(index: int) -> dict:
            run = measure.lockstep_train(DEMO_CONFIG, tmp_path / f"{label}-{index}", *overrides, *extra)
            assert run.returncode == 0, run.stderr[-3000:]
            summary = run.summary
            loop = summary["wall_time_s"] - summary["checkpoint_time_s"]
            return {
                "steps": summary["steps"], "train_tokens": summary["train_tokens"], "tokens_per_s": summary["tokens_per_s"],
                "wall_time_s": summary["wall_time_s"], "checkpoint_time_s": summary["checkpoint_time_s"],
                "checkpoint_share": summary["checkpoint_share"], "tokens_per_s_without_checkpoints": summary["train_tokens"] / loop,
                "startup_s": run.seconds_to_first_step(), "final_loss": summary["final_train_loss"],
                "grad_norms": [row["grad_norm"] for row in run.rows if row["loss"] is not None],
                "step_tokens_per_s": measure.median([row["tokens_per_s"] for row in run.rows if row["loss"] is not None]),
            }

        return run_once

    def bare_run(index: int) -> dict:
        out = tmp_path / f"bare-{index}.json"
        started = time.time()
        result = subprocess.run([sys.executable, str(BARE_SCRIPT), *bare_args, "--work-dir", str(tmp_path / f"bare-{index}"),
                                 "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        found = json.loads(out.read_text())
        return {**found, "startup_s": round(found["first_step_time"] - started, 3), "step_tokens_per_s": measure.median(found["step_tokens_per_s"])}

    variants = {"lockstep": lockstep("lockstep"), "lockstep, one checkpoint": lockstep("one-checkpoint", ONE_CHECKPOINT), "bare": bare_run}
    results = benchmark.pedantic(measure.interleaved, args=(variants, count), rounds=1, iterations=1)
    ours, single, bare = results["lockstep"], results["lockstep, one checkpoint"], results["bare"]

    # The same training on every side, every round: otherwise the ratio compares different work.
    everything = ours + single + bare
    assert {r["steps"] for r in everything} == {bare_args_steps(bare_args)}
    assert len({r["train_tokens"] for r in everything}) == 1, [r["train_tokens"] for r in everything]
    for index, bare_round in enumerate(bare):
        for other in (ours[index], single[index]):
            assert math.isclose(other["final_loss"], bare_round["final_loss"], rel_tol=1e-2), (other["final_loss"], bare_round["final_loss"])
    assert all(norm and norm > 0 and math.isfinite(norm) for r in everything for norm in r["grad_norms"])

    def med(rows: list[dict], key: str) -> float:
        return measure.median([row[key] for row in rows])

    report = {
        "rounds": count,
        "steps": ours[0]["steps"],
        "train_tokens": ours[0]["train_tokens"],
        "lockstep_tokens_per_s": round(med(ours, "tokens_per_s"), 1),
        "bare_tokens_per_s": round(med(bare, "tokens_per_s"), 1),
        "tokens_per_s_ratio": measure.ratio(med(ours, "tokens_per_s"), med(bare, "tokens_per_s")),
        "paired_ratio_median": round(measure.median([o["tokens_per_s"] / b["tokens_per_s"] for o, b in zip(ours, bare)]), 3),
        "target_ratio": TARGET_RATIO,
        "ratio_without_checkpoints": measure.ratio(med(ours, "tokens_per_s_without_checkpoints"), med(bare, "tokens_per_s")),
        "one_checkpoint_tokens_per_s": round(med(single, "tokens_per_s"), 1),
        "ratio_one_checkpoint": measure.ratio(med(single, "tokens_per_s"), med(bare, "tokens_per_s")),
        "checkpoint_cost": round(1 - med(ours, "tokens_per_s") / med(single, "tokens_per_s"), 3),
        "lockstep_step_tokens_per_s": round(med(ours, "step_tokens_per_s"), 1),
        "bare_step_tokens_per_s": round(med(bare, "step_tokens_per_s"), 1),
        "step_ratio": measure.ratio(med(ours, "step_tokens_per_s"), med(bare, "step_tokens_per_s")),
        "checkpoint_share": round(med(ours, "checkpoint_share"), 4),
        "lockstep_startup_s": round(med(ours, "startup_s"), 2),
        "bare_startup_s": round(med(bare, "startup_s"), 2),
        "startup_ratio": measure.ratio(med(ours, "startup_s"), med(bare, "startup_s")),
        "lockstep_spread": measure.spread([row["tokens_per_s"] for row in ours]),
        "bare_spread": measure.spread([row["tokens_per_s"] for row in bare]),
    }
    benchmark.extra_info.update(report)
    print(f"\n{case}: lockstep {report['lockstep_tokens_per_s']:,.0f} tokens/s, bare trl {report['bare_tokens_per_s']:,.0f} tokens/s: "
          f"ratio {report['tokens_per_s_ratio']} (target >= {TARGET_RATIO}; {report['ratio_one_checkpoint']} with one checkpoint at the end; "
          f"the checkpoints every 10% cost {report['checkpoint_cost']:.1%} of the throughput, {report['checkpoint_share']:.1%} of the "
          f"loop inside saves); first step after {report['lockstep_startup_s']} s vs "
          f"{report['bare_startup_s']} s ({count} rounds)")


def _bare_arguments(run_config: config.RunConfig) -> list[str]:
    """The bare script's arguments for the training `run_config` describes (what it hard-codes is checked here)."""
    t, lora = run_config.train, run_config.lora
    assert lora.target_modules == ("all-linear",) and t.scheduler == "cosine" and t.gradient_accumulation == 1
    assert t.weight_decay == 0 and t.max_grad_norm == 1.0 and run_config.quantization == "none"
    assert t.log_every_steps == 1 and not t.deterministic
    assert run_config.data.format in ("prompt_completion", "auto")
    model_path = resolve_model(run_config.model.name_or_path, run_config.model.gguf_file)
    tokenizer = load_tokenizer(model_path, run_config)
    rows = data.read_jsonl(run_config.data.train)
    train_rows = len(data.tokenize(rows, "prompt_completion", tokenizer, t.max_seq_len, run_config.data.train).input_ids)
    return [
        "--model", model_path, "--train", str(data.resolve_path(run_config.data.train)),
        *(["--valid", str(data.resolve_path(run_config.data.valid))] if run_config.data.valid else []),
        "--max-steps", str(total_steps(run_config, train_rows)), "--batch-size", str(t.per_device_batch_size),
        "--learning-rate", str(t.learning_rate), "--warmup-ratio", str(t.warmup_ratio), "--max-seq-len", str(t.max_seq_len),
        "--eval-every-percent", str(t.eval_every_percent), "--lora-r", str(lora.r), "--lora-alpha", str(lora.alpha),
        "--lora-dropout", str(lora.dropout), "--seed", str(t.seed), "--precision", t.precision,
        *(["--gradient-checkpointing"] if t.gradient_checkpointing else []),
    ]


def bare_args_steps(args: list[str]) -> int:
    return int(args[args.index("--max-steps") + 1])
