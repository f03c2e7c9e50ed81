"""The allocator variable the job sets: the name its torch release reads, unless the user set one."""

from __future__ import annotations

from runner.training import allocator


def test_the_job_sets_the_name_its_torch_reads_unless_the_user_did():
    import importlib.metadata

    environ: dict[str, str] = {}
    name = allocator.set_default(environ)
    assert name == allocator.variable_for(importlib.metadata.version("torch")) and environ == {name: "expandable_segments:True"}
    mine = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}
    assert allocator.set_default(mine) is None and mine == {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}
