"""`nox -s compat [-- STACK ...]`: the compatibility gate, run before money is spent.

Per stack: the lock is current; no known-bad combination (lockfiles/known-bad.toml) is in
it; it installs into a fresh environment with --require-hashes; `pip check` passes; the
engine's libraries import; nothing drifted from the lock; and the demo fine-tunes for real
through `lockstep train`. Each stack gets a report (pass / fail / skip with the reason) as
JSON and Markdown in runs/compat/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from runner import stacks
from runner.errors import LockstepError, run_command
from runner.rundir import SUMMARY_FILE
from runner.stacks import install, known_bad
from runner.util import console

REPO_ROOT = stacks.LOCKFILES.parent
IMPORTS = {
    "hf": ("torch", "transformers", "trl", "peft", "accelerate", "datasets"),  # also for `auto`
    "mlx": ("mlx.core", "mlx_lm", "datasets"),
}
SMOKE_STEPS = 20


@dataclass(frozen=True)
class Gate:
    """One line of a stack's compatibility report: what was tried, and whether it passed."""

    name: str
    status: str  # pass | fail | skip
    detail: str


def check_stack(stack: stacks.Stack, work: Path) -> list[Gate]:
    problem = stack.lock_problem()
    if problem and not stack.lock_file.is_file():
        return [Gate("lock", "skip", problem)]
    if problem:
        return [Gate("lock", "fail", problem)]
    checks = [Gate("lock", "pass", f"{stack.lock_file.name} matches {stack.input_file.name}")]
    checks += _known_bad(stack)
    venv = work / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    try:
        install.install(stack, venv)
    except LockstepError as exc:
        return [*checks, Gate("install --require-hashes", "fail", str(exc))]
    checks.append(Gate("install --require-hashes", "pass", f"fresh environment {venv}"))
    python = str(venv / "bin" / "python")
    checks.append(_command("pip check", [python, "-m", "pip", "check"]))
    modules = IMPORTS.get(stack.engine, IMPORTS["hf"])
    checks.append(_command(f"import {', '.join(modules)}", [python, "-c", f"import {', '.join(modules)}"]))
    checks.append(_drift(python, stack))
    checks.append(_smoke_train(stack, venv, work))
    return checks


def _known_bad(stack: stacks.Stack) -> list[Gate]:
    rules = known_bad.load()
    findings = {f.rule.id: f for f in known_bad.evaluate(stacks.pins(stack.lock_file.read_text()), rules)}
    checks = []
    for rule in rules:
        finding = findings.get(rule.id)
        if finding is None:
            checks.append(Gate(f"known-bad: {rule.id}", "pass", "does not apply"))
        else:
            checks.append(Gate(f"known-bad: {rule.id}", "fail" if rule.severity == "error" else "pass", finding.describe()))
    return checks


def _command(name: str, command: list[str]) -> Gate:
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    output = (result.stdout + result.stderr).strip()
    return Gate(name, "pass" if result.returncode == 0 else "fail", output[-2000:] or "ok")


def _drift(python: str, stack: stacks.Stack) -> Gate:
    result = subprocess.run([python, "-m", "runner.stacks.drift", stack.name], capture_output=True, text=True, cwd=REPO_ROOT)
    if result.returncode != 0:
        return Gate("installed = lock", "fail", result.stderr.strip()[-2000:])
    from runner.stacks.drift import describe

    drift = json.loads(result.stdout)
    return Gate("installed = lock", "pass" if drift["clean"] else "fail", describe(drift))


def _smoke_train(stack: stacks.Stack, venv: Path, work: Path) -> Gate:
    name = f"fine-tune the demo ({SMOKE_STEPS} steps)"
    if stack.accelerator == "cuda":
        return Gate(name, "skip", "needs a CUDA GPU; run `nox -s compat` on a GPU machine")
    run_dir = work / "smoke-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = "configs/demo-mlx.yaml" if stack.engine == "mlx" else "configs/demo.yaml"
    command = [str(venv / "bin" / "lockstep"), "train", config, "--fresh",
               "--set", f"output_dir={run_dir}", "--set", f"train.max_steps={SMOKE_STEPS}"]
    check = _command(name, command)
    if check.status == "fail":
        return check
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    drop = summary.get("eval_loss_drop") or 0
    detail = f"eval loss {summary['first_eval_loss']:.3f} -> {summary['final_eval_loss']:.3f} in {summary['steps']} steps"
    return Gate(name, "pass" if drop > 0.2 else "fail", detail)


def write_report(stack: stacks.Stack, checks: list[Gate], out_dir: Path) -> str:
    """Write <stack>.json and <stack>.md; return the stack's overall status."""
    status = "fail" if any(c.status == "fail" for c in checks) else ("skip" if all(c.status == "skip" for c in checks) else "pass")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"stack": stack.name, "status": status, "checks": [asdict(c) for c in checks]}
    (out_dir / f"{stack.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Compatibility: stack `{stack.name}` — {status.upper()}", "", stack.description, "",
             "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {c.status} | {_cell(c.detail)} |" for c in checks]
    (out_dir / f"{stack.name}.md").write_text("\n".join(lines) + "\n")
    return status


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")[:600]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nox -s compat --", description="Run the compatibility gate (all stacks by default).")
    parser.add_argument("stacks", nargs="*")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "compat", help="report directory")
    args = parser.parse_args(argv)
    return run_command(lambda: _gate_all(args.stacks, args.out))


def _gate_all(names: Sequence[str], out: Path) -> int:
    chosen = [stacks.get(name) for name in names] or list(stacks.load().values())
    known_bad.load()  # a broken rules file stops everything before any install
    failed = []
    for stack in chosen:
        console.say(f"compat: {stack.name} ...")
        checks = check_stack(stack, out / ".work" / stack.name)
        status = write_report(stack, checks, out)
        for c in checks:
            print(f"  {c.status:<4}  {c.name}" + (f": {c.detail.splitlines()[0][:160]}" if c.status != "pass" else ""), file=sys.stderr)
        console.say(f"compat: {stack.name}: {status.upper()} (report: {out / (stack.name + '.md')})")
        if status == "fail":
            failed.append(stack.name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
