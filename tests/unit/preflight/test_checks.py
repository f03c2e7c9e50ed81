"""Preflight's orchestration: waivers unblock only what they name."""

from __future__ import annotations

from runner.preflight import checks as preflight
from runner.problems import Check


def test_waivers_unblock_only_what_they_name():
    checks = [Check(name="data.train", status="error", summary="x"), Check(name="memory", status="error", summary="y"),
              Check(name="limits", status="error", summary="z")]
    waived, unknown = preflight._apply_waivers(checks, ["data", "limits", "typo"])
    assert [c.blocks for c in waived] == [False, True, True]  # platform limits cannot be waived
    assert unknown == ["limits", "typo"]
