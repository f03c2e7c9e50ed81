"""On a CUDA GPU: the allocator variable lockstep sets in a job takes effect (expandable segments on)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.gpu

PROBE = """
from runner.training import allocator
name = allocator.set_default()
import torch
torch.zeros(1, device="cuda")
print(name, torch.cuda.memory._snapshot()["allocator_settings"]["expandable_segments"])
"""


def test_the_variable_the_job_sets_enables_expandable_segments():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (none visible): the allocator only exists there")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")}
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env | {"PYTHONPATH": str(REPO_ROOT)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    name, enabled = result.stdout.split()
    assert name in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF") and enabled == "True", result.stdout
