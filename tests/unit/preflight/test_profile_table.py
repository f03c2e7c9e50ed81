"""The README's table of recommended settings is what the recommendation gives today."""

from __future__ import annotations

import re

from runner.preflight import profile_table
from tests.helpers import REPO_ROOT


def test_readme_table_equals_the_recommendation():
    readme = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"<!-- profile-table -->\n(.*?)<!-- /profile-table -->", readme, re.DOTALL)
    assert match, "README.md lost its profile-table markers"
    assert match.group(1).strip() == profile_table.table(), "regenerate it: python -m runner.preflight.profile_table"


def test_reference_recommendations_are_sane():
    rows = profile_table.table().splitlines()[2:]
    by_key = {tuple(cell.strip() for cell in row.strip("|").split("|")[:2]): row for row in rows}
    assert "does not fit" in by_key[("M1-8GB", "Llama-3.1-8B")]  # 8B weights alone exceed what Metal may wire
    assert "| 4-bit |" in by_key[("L4-24GB", "Llama-3.1-8B")]  # 16 GB of bf16 weights plus activations need QLoRA on 24 GB
    assert "| bf16 |" in by_key[("H100-80GB", "Llama-3.1-8B")]
