"""Problems found before a run starts (platform limits, preflight): what is wrong and how to fix it,
and the checks preflight reports, passed or not."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, kw_only=True)
class Problem:
    check: str  # what was checked, e.g. "modal.gpus_per_container"
    message: str  # what is wrong, with the numbers
    fix: str  # what to change
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.message}: {self.fix}" if self.fix else self.message


def errors(problems: Sequence[Problem]) -> list[Problem]:
    return [problem for problem in problems if problem.severity == "error"]


def warnings(problems: Sequence[Problem]) -> list[Problem]:
    return [problem for problem in problems if problem.severity == "warning"]


Status = Literal["ok", "warning", "error"]


@dataclass(frozen=True, kw_only=True)
class Check:
    """One line of preflight's table: what was checked, how it went, and the fix when it did not."""

    name: str  # the key `--waive` takes, e.g. "data.train", "memory"
    status: Status
    summary: str
    fix: str = ""
    waived: bool = False  # an error the user chose to accept (`--waive NAME`)

    @property
    def blocks(self) -> bool:
        return self.status == "error" and not self.waived


def as_check(name: str, problem: Problem) -> Check:
    return Check(name=name, status=problem.severity, summary=problem.message, fix=problem.fix)
