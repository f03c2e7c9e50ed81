"""The demo's own data passes its own preflight: nothing a new user learns to ignore on the first run."""

from __future__ import annotations

import json

from tests.helpers import DEMO_CONFIG, run_lockstep


def test_demo_preflight_has_no_data_warnings(tmp_path):
    result = run_lockstep("preflight", str(DEMO_CONFIG), "--set", f"output_dir={tmp_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = json.loads((tmp_path / "preflight_report.json").read_text())["checks"]
    data_checks = [(check["name"], check["status"], check["summary"]) for check in checks if check["name"].startswith("data.")]
    names = [name for name, _, _ in data_checks]
    assert names.count("data.duplicates") == 2 and names.count("data.overlap") == 1, data_checks  # train, valid; the pair
    # data.empty shows only when a file has empty rows, as a warning: all ok means none of them either.
    assert all(status == "ok" for _, status, _ in data_checks), data_checks
