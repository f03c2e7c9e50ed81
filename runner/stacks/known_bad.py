"""Known-bad combinations (lockfiles/known-bad.toml) evaluated against a lock's pinned versions."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from runner.errors import StackError
from runner.stacks import LOCKFILES, normalize

RULES_FILE = LOCKFILES / "known-bad.toml"
ABSENT = "absent"
SEVERITIES = ("error", "warning")


@dataclass(frozen=True)
class Rule:
    id: str
    when: dict[str, str]
    severity: str
    problem: str
    fix: str
    source: str


@dataclass(frozen=True)
class Finding:
    rule: Rule
    versions: dict[str, str]  # the locked versions that made the rule apply ("absent" for a missing package)

    def describe(self) -> str:
        found = ", ".join(f"{name} {version}" for name, version in self.versions.items())
        return f"[{self.rule.severity}] {self.rule.id} ({found}): {self.rule.problem}. Fix: {self.rule.fix}. Source: {self.rule.source}"


def load(path: Path = RULES_FILE) -> list[Rule]:
    try:
        entries = tomllib.loads(path.read_text()).get("rule", [])
        rules = [Rule(**entry) for entry in entries]
    except (OSError, tomllib.TOMLDecodeError, TypeError) as exc:
        raise StackError(f"cannot read the known-bad rules in {path}: {exc}") from exc
    problems = []
    for rule in rules:
        if rule.severity not in SEVERITIES:
            problems.append(f"{rule.id}: severity must be one of {', '.join(SEVERITIES)}")
        if not rule.source.startswith("https://"):
            problems.append(f"{rule.id}: every rule cites its source as an https link")
        for name, condition in rule.when.items():
            if condition != ABSENT:
                try:
                    SpecifierSet(condition)
                except InvalidSpecifier:
                    problems.append(f"{rule.id}: {name} = {condition!r} is neither a version specifier nor 'absent'")
    if problems:
        raise StackError(f"{path}: " + "; ".join(problems))
    return rules


def evaluate(pinned: dict[str, list[str]], rules: list[Rule]) -> list[Finding]:
    """The rules that apply to a lock whose pins are `pinned` (see stacks.pins)."""
    findings = []
    for rule in rules:
        matched: dict[str, str] = {}
        for name, condition in rule.when.items():
            versions = pinned.get(normalize(name), [])
            if condition == ABSENT:
                hit = ABSENT if not versions else None
            else:
                hit = next((v for v in versions if _public(v) in SpecifierSet(condition)), None)
            if hit is None:
                break
            matched[name] = hit
        else:
            findings.append(Finding(rule, matched))
    return findings


def _public(version: str) -> Version:
    """2.9.1+cu128 -> 2.9.1: local build tags do not change which release it is."""
    try:
        return Version(Version(version).public)
    except InvalidVersion:
        return Version("0")
