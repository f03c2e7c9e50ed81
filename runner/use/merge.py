"""`lockstep merge RUN`: the base model with the run's adapter merged into its weights, saved in
`RUN/merged_model/` (beside `adapter/`) in Hugging Face format, loadable with `from_pretrained`
and servable without peft. An `mlx` run is merged from its PEFT export (`adapter_peft/`)."""

from __future__ import annotations

import sys
from pathlib import Path

from runner import run_lock, rundir
from runner.errors import OutputDirError
from runner.rundir import ADAPTER_DIR, CONFIG_FILE, MERGED_DIR
from runner.training.checkpoint import CheckpointStore
from runner.training.final_outputs import publish


def merge(run_dir: Path) -> Path:
    """Write RUN/merged_model atomically (staged beside it, then renamed over any earlier one); return it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from runner import config as config_module
    from runner.engines.hf_compat import dtype_argument, quiet_libraries
    from runner.models import load_tokenizer, resolve_model

    quiet_libraries()
    adapter = _adapter(run_dir)
    config = config_module.load(str(run_dir / CONFIG_FILE), [])
    base = resolve_model(config.model.name_or_path, config.model.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(base, revision=config.model.revision, trust_remote_code=config.model.trust_remote_code,
                                                 **dtype_argument("auto"))  # the base's own precision, as it was published
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()

    def write(staging: Path) -> None:
        merged.save_pretrained(staging)
        load_tokenizer(base, config).save_pretrained(staging)

    with run_lock.hold(run_dir):  # one writer: not beside a `train` of the same run
        return publish(run_dir, MERGED_DIR, write, CheckpointStore(run_dir), then="merge again")


def _adapter(run_dir: Path) -> Path:
    details = rundir.require_finished(run_dir)
    if details["engine"] != "mlx":
        return run_dir / ADAPTER_DIR
    if not details.get("peft_export"):
        raise OutputDirError(f"{run_dir} is an mlx run without a PEFT export ({details.get('peft_export_skipped')}); "
                             "merge it with mlx-lm instead: mlx_lm.fuse --model BASE --adapter-path RUN/adapter")
    return run_dir / details["peft_export"]


def main(run_dir: Path) -> int:
    target = merge(run_dir)
    print(f"merged model: {target} (load it with AutoModelForCausalLM.from_pretrained)", file=sys.stderr)
    return 0
