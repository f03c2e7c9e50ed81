"""runner.preflight.memory's estimate against the measured peak of real CPU training runs (python -m runner.job).

Each configuration trains in a fresh process; its peak resident memory above a process that only
imported the libraries must be within a quarter of the estimate. None of them is one of the runs
the estimate's empirical factor was fitted on (tests.memory_probe.FITTED).
"""

from __future__ import annotations

import sys

import pytest

from tests.memory_probe import FITTED, Case, measure

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="the CPU estimate models glibc's malloc")]

TOLERANCE = 0.25
CHECKED = (  # different batch, length, checkpointing, dropout and model; the small-llama ones (~75 s) with `nox -s extended`
    pytest.param(Case(batch=4, seq_len=512), marks=pytest.mark.extended),
    pytest.param(Case(batch=4, seq_len=512, gradient_checkpointing=True), marks=pytest.mark.extended),
    Case(model="tiny-llama", batch=16, seq_len=1024, lora_dropout=0.0),
)


@pytest.mark.parametrize("case", CHECKED, ids=lambda case: case.label)
def test_estimate_is_within_a_quarter_of_the_measured_peak(case):
    assert case not in FITTED
    row = measure(case)
    print(f"{row['case']}: estimated {row['estimated_mib']:.0f} MiB, measured {row['measured_mib']:.0f} MiB "
          f"({row['error']:+.1%}); estimate's parts in MiB: {row['parts_mib']}")
    assert abs(row["error"]) <= TOLERANCE, row
