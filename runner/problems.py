"""Check: one finding of what lockstep verifies before anything runs (preflight's checks, a backend's platform
limits), with what was found and, when it is not ok, how to fix it. One type for every such finding: the
limits' findings are preflight's `limits` lines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warning", "error"]
MARKS = {"ok": "✓", "warning": "⚠", "error": "✗"}  # how each status is shown, in preflight's table and validate-data


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str  # the key `--waive` takes, e.g. "data.train", "memory", "limits"
    status: Status
    summary: str  # what was found, with the numbers
    fix: str = ""  # what to change, when the status is not ok
    waived: bool = False  # an error the user chose to accept (`--waive NAME`)

    @property
    def blocks(self) -> bool:
        return self.status == "error" and not self.waived

    def __str__(self) -> str:
        return f"{self.summary}: {self.fix}" if self.fix else self.summary


def errors(checks: Sequence[Check]) -> list[Check]:
    return [check for check in checks if check.status == "error"]


def warnings(checks: Sequence[Check]) -> list[Check]:
    return [check for check in checks if check.status == "warning"]
