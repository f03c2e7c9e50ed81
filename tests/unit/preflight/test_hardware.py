"""Preflight's hardware: profiles by name and GPU-type alias, usable memory per accelerator, detection parsing."""

from __future__ import annotations

import pytest

from runner.preflight import hardware

GIB = 2**30


def test_profiles_by_name_and_gpu_type_alias():
    assert hardware.profile("h100").name == "H100-80GB" and hardware.profile("H100-80GB").memory_bytes == 81559 * 2**20
    assert hardware.resolve_profile_name("A100") == "A100-40GB" and hardware.resolve_profile_name("a100-80gb") == "A100-80GB"
    assert hardware.profile("L4").bf16 and not hardware.profile("T4").bf16
    with pytest.raises(KeyError):
        hardware.profile("TPU-v5")


def test_usable_memory_per_accelerator():
    assert hardware.profile("H100-80GB").budget_bytes == int(81559 * 2**20 * 0.92)
    m1 = hardware.profile("M1-8GB")  # Metal wires about 2/3 of unified memory up to 36 GB, 3/4 above
    assert m1.budget_bytes == int(8 * GIB * 0.66) and hardware.profile("M3-Max-64GB").budget_bytes == int(64 * GIB * 0.75)


def test_nvidia_smi_and_meminfo_parsing():
    gpus = hardware.parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81559, 550.54.15, 9.0\nTesla T4, 15360, 535.104.05, 7.5\n")
    assert gpus == [{"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "driver": "550.54.15", "compute_capability": 9.0},
                    {"name": "Tesla T4", "memory_mib": 15360, "driver": "535.104.05", "compute_capability": 7.5}]
    info = hardware.parse_meminfo("MemTotal:       24576000 kB\nMemAvailable:   20000000 kB\nHugePages_Total:       0\n")
    assert info == {"MemTotal": 24576000 * 1024, "MemAvailable": 20000000 * 1024}


def test_this_machine_is_detected():
    here = hardware.detect()
    assert here.cpu_cores and here.cpu_cores >= 1 and 0 < here.memory_bytes <= (here.ram_bytes or 0)
