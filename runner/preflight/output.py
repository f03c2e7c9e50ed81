"""What preflight leaves behind: the terminal table (✓ / ⚠ / ✗ with the fix for each), the run
directory's preflight_report.json and recommended_config.yaml, and `--apply`'s new config file."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import yaml

from runner import config as config_module
from runner import rundir
from runner.errors import OutputDirError, PreflightError, StackError
from runner.preflight.checks import PreflightResult
from runner.preflight.recommend import Recommendation
from runner.problems import MARKS
from runner.rundir import PREFLIGHT_REPORT as REPORT_FILE
from runner.rundir import RECOMMENDED_CONFIG as RECOMMENDED_FILE
from runner.spec import JobSpec
from runner.util.files import write_atomic

HEADER = "# Written by lockstep preflight"  # marks the recommended configs preflight may overwrite
WRITTEN_BY = "lockstep preflight"  # the same mark in preflight_report.json


def print_table(result: PreflightResult, spec: JobSpec, stream: TextIO) -> None:
    where = result.hardware.describe() if result.hardware else "hardware unknown"
    print(f"preflight: {spec.config_path.name} on --backend {result.backend} ({where})", file=stream)
    width = max(len(check.name) for check in result.checks)
    for check in result.checks:
        mark = "⚠" if check.waived else MARKS[check.status]
        note = " (waived)" if check.waived else ""
        print(f"  {mark} {check.name:<{width}}  {check.summary}{note}", file=stream)
        if check.status != "ok" and check.fix:
            print(f"    {'':<{width}}  fix: {check.fix}", file=stream)
    if result.recommendation is not None:
        _print_recommendation(result.recommendation, spec, stream)
    counts = {status: sum(1 for c in result.checks if c.status == status and not c.waived) for status in MARKS}
    waived = sum(1 for c in result.checks if c.waived)
    print(f"  {counts['ok']} passed, {counts['warning']} warning(s), {counts['error']} failed" + (f", {waived} waived" if waived else ""),
          file=stream)
    for name in result.unknown_waivers:
        print(f"  note: --waive {name} matches no check", file=stream)


def _print_recommendation(advice: Recommendation, spec: JobSpec, stream: TextIO) -> None:
    changes = advice.changes(spec.config)
    if not changes:
        print(f"  recommended: keep the settings ({advice.reason})", file=stream)
        return
    print("  recommended:" if advice.fits else "  closest setting (does not fit):", file=stream)
    for key, (before, after) in changes.items():
        print(f"    {key}: {before} -> {after}", file=stream)
    print(f"    why: {advice.reason}; estimated {advice.estimate.total / 2**30:.2f} GiB of {advice.budget_bytes / 2**30:.1f} GiB usable",
          file=stream)


def write(result: PreflightResult, spec: JobSpec) -> Path:
    """preflight_report.json and recommended_config.yaml in the run directory (the record of a run's start);
    returns the report's path. OutputDirError, with nothing written, where preflight may not write."""
    check_destination(spec.run_dir)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(spec.run_dir / REPORT_FILE, json.dumps(as_json(result, spec), indent=2) + "\n")
    write_atomic(spec.run_dir / RECOMMENDED_FILE, recommended_yaml(result, spec))
    return spec.run_dir / REPORT_FILE


def check_destination(run_dir: Path) -> None:
    """OutputDirError (exit 5) if preflight may not write the record of a run's start into `run_dir`."""
    rundir.check_usable(run_dir)
    problem = destination_problem(run_dir, standalone=False)
    if problem:
        raise OutputDirError(f"{problem}; nothing was written. Move it aside, or choose another output_dir")


def destination_problem(run_dir: Path, *, standalone: bool) -> str | None:
    """Why preflight may not write its files into `run_dir`, or None. It writes only where a run is or will be,
    never over a file it did not write, and `lockstep preflight` alone leaves a started run's record as it is."""
    if run_dir.exists() and not run_dir.is_dir():
        return f"output_dir {run_dir} exists and is not a directory"
    if rundir.has_run_content(run_dir) and not rundir.is_run(run_dir):
        return f"output_dir {run_dir} holds files that are not a lockstep run"
    if standalone and rundir.is_run(run_dir):
        return f"{run_dir} holds a run that has started, whose preflight record (from its latest start) is kept"
    for name in (REPORT_FILE, RECOMMENDED_FILE):
        if (run_dir / name).exists() and not _written_by_preflight(run_dir / name):
            return f"{run_dir / name} was not written by lockstep preflight"
    return None


def _written_by_preflight(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix == ".yaml":
        return text.startswith(HEADER)
    try:
        record = json.loads(text)
    except ValueError:
        return False
    # Reports written before the mark existed have the same shape.
    return isinstance(record, dict) and (record.get("written_by") == WRITTEN_BY or {"checks", "passed", "written_at"} <= set(record))


def as_json(result: PreflightResult, spec: JobSpec) -> dict[str, Any]:
    advice = result.recommendation
    return {
        "written_by": WRITTEN_BY,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": str(spec.config_path), "overrides": list(spec.overrides), "backend": result.backend, "host": platform.node(),
        "passed": not result.blocking,
        "counts": {status: sum(1 for c in result.checks if c.status == status) for status in MARKS},
        "checks": [asdict(check) for check in result.checks],
        "hardware": asdict(result.hardware) if result.hardware else None,
        "model": {"parameters": result.model.shape.parameters() if result.model.shape else None,
                  "lora_parameters": result.model.shape.lora_parameters(spec.config.lora.r) if result.model.shape else None,
                  "weights_bytes": result.model.weights_bytes, "prequantized": result.model.prequantized, **result.model.details},
        "tokens": result.token_stats,
        "memory_gib": result.estimate,
        "recommendation": None if advice is None else {
            "fits": advice.fits, "reason": advice.reason, "settings": advice.settings.as_config(),
            "changes": {key: {"configured": before, "recommended": after} for key, (before, after) in advice.changes(spec.config).items()},
            "memory_gib": advice.estimate.as_gib(), "budget_gib": round(advice.budget_bytes / 2**30, 3)},
        "unknown_waivers": result.unknown_waivers,
    }


def recommended_yaml(result: PreflightResult, spec: JobSpec) -> str:
    """The user's config (as written, with its --set overrides) with the recommended values set."""
    raw = yaml.safe_load(spec.config_path.read_text()) or {}
    problems: list[str] = []
    config_module.apply_overrides(raw, spec.overrides, problems)
    advice = result.recommendation
    lines = [HEADER + f" from {spec.config_path.name} on {datetime.now(timezone.utc):%Y-%m-%d}"]
    if advice is None:
        lines.append("# No recommendation: the model's shape or the hardware is unknown (see preflight_report.json).")
    else:
        target = result.hardware.describe() if result.hardware else "unknown hardware"
        lines.append(f"# For {target}." if advice.fits else f"# Closest setting; it does NOT fit {target}.")
        lines += [f"# {key}: {before} -> {after}" for key, (before, after) in advice.changes(spec.config).items()]
        lines.append(f"# Why: {advice.reason}.")
        for key, value in advice.settings.as_config().items():
            config_module.set_dotted(raw, key, value)
    return "\n".join(lines) + "\n" + yaml.safe_dump(raw, sort_keys=False)


def apply(result: PreflightResult, spec: JobSpec, target: Path | None) -> Path:
    """Write the recommended config to a new file (default: CONFIG.recommended.yaml beside CONFIG)."""
    path = target or spec.config_path.with_name(f"{spec.config_path.stem}.recommended.yaml")
    if path.resolve() == spec.config_path.resolve():
        raise PreflightError(f"--apply would overwrite the config itself ({path}); name another file")
    if path.exists() and not path.read_text().startswith(HEADER):
        raise PreflightError(f"--apply: {path} exists and was not written by preflight; name another file (--apply PATH) or move it")
    text = recommended_yaml(result, spec)
    problems: list[str] = []
    config_module.from_dict(yaml.safe_load(text), problems)
    if problems:  # a bug here, not the user's: never leave a config behind that would not load
        raise PreflightError(f"the recommended config would not load ({'; '.join(problems)}); nothing was written")
    write_atomic(path, text)
    return path


def refuse(result: PreflightResult, run_dir: Path, *, written: bool = True) -> None:
    """Raise PreflightError naming each blocking check and how to waive it; StackError (exit 8, as where a lock
    is read) when the stack's lock is among them, since no data or setting fixes that."""
    blocking = result.blocking
    error = StackError if any(check.name == "lock" for check in blocking) else PreflightError
    lines = [f"{check.name}: {check.summary}" + (f" -> fix: {check.fix}" if check.fix else "") for check in blocking]
    names = " ".join(f"--waive {name}" for name in dict.fromkeys(check.name for check in blocking))
    raise error(
        f"preflight found {len(blocking)} problem(s); nothing was started:\n  - " + "\n  - ".join(lines)
        + (f"\nThe full report is in {run_dir / REPORT_FILE}." if written else "")
        + f"\nTo run anyway, accept each explicitly: {names}"
    )
