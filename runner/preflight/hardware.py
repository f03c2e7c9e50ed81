"""The hardware a run trains on: detected here (CUDA GPUs, Apple silicon, CPU cores and RAM) or
declared by a profile (`--hardware H100-80GB`, or the backend's resources.gpu_type).

Memory figures are per device: what one training process can use. Detection asks the system
(nvidia-smi, sysctl, /proc, the cgroup limit) rather than torch, so a CPU-only torch on a GPU
machine shows up as a mismatch instead of as "no GPU".
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from runner import PACKAGE_DIR

Accelerator = Literal["cuda", "metal", "cpu"]
PROFILES_FILE = PACKAGE_DIR / "tables" / "hardware_profiles.toml"
MIB = 2**20


@dataclass(frozen=True, kw_only=True)
class Hardware:
    accelerator: Accelerator
    name: str  # "NVIDIA H100 80GB HBM3", "Apple M2 Pro", "CPU (x86_64)"
    memory_bytes: int  # per device: GPU memory, unified memory (Apple silicon), or the RAM available now
    devices: int = 1  # GPUs per node (1 for CPU and Apple silicon)
    bf16: bool = False
    cpu_cores: int | None = None
    ram_bytes: int | None = None
    source: str = "detected"  # "detected", or the profile's name
    overhead_bytes: int = 0  # what the runtime takes before training starts (CUDA context, libraries)
    details: dict[str, Any] = field(default_factory=dict)  # driver, compute capability, torch's view...

    @property
    def budget_bytes(self) -> int:
        """What one training process may plan to use (see `usable` in the profiles file)."""
        return int(self.memory_bytes * usable_share(self.accelerator, self.memory_bytes))

    def describe(self) -> str:
        memory = f"{self.memory_bytes / 2**30:.1f} GiB"
        if self.accelerator == "cuda":
            text = f"{self.devices} x {self.name} ({memory} each)"
        elif self.accelerator == "metal":
            text = f"{self.name}, {memory} of unified memory ({self.budget_bytes / 2**30:.1f} GiB usable by Metal)"
        else:
            text = f"{self.name}, {memory} of RAM available"
        if self.cpu_cores:
            text += f", {self.cpu_cores} CPU cores"
        return text if self.source == "detected" else f"{text} (profile {self.source})"


@cache
def _table() -> dict[str, Any]:
    return tomllib.loads(PROFILES_FILE.read_text())


def profile_names() -> list[str]:
    return list(_table()["profiles"])


def usable_share(accelerator: Accelerator, memory_bytes: int) -> float:
    usable = _table()["usable"]
    if accelerator == "metal":
        return usable["metal_small"] if memory_bytes <= usable["metal_small_max_mib"] * MIB else usable["metal_large"]
    return float(usable[accelerator])


def profile(name: str, devices: int = 1) -> Hardware:
    """The hardware of profile `name` (or a GPU type alias such as H100 or L4); KeyError if unknown."""
    key = resolve_profile_name(name)
    if key is None:
        raise KeyError(name)
    entry = _table()["profiles"][key]
    accelerator = entry["accelerator"]
    total = entry["memory_mib"] * MIB
    return Hardware(accelerator=accelerator, name=key, memory_bytes=total, devices=devices, bf16=entry["bf16"], ram_bytes=total if accelerator == "metal" else None, source=key,
                    overhead_bytes=_table()["overhead_mib"][accelerator] * MIB)


def resolve_profile_name(name: str) -> str | None:
    """A profile's own name, case-insensitively, or the profile a GPU type alias stands for."""
    wanted = name.strip().lower()
    for key, entry in _table()["profiles"].items():
        if wanted == key.lower() or wanted in (alias.lower() for alias in entry["aliases"]):
            return key
    return None


def detect() -> Hardware:
    """The hardware of this machine: its CUDA GPUs if any, else Apple silicon, else the CPU."""
    cores = cpu_cores()
    ram_total, ram_available = memory()
    gpus = nvidia_gpus()
    if gpus:
        first = gpus[0]
        return Hardware(accelerator="cuda", name=first["name"], memory_bytes=first["memory_mib"] * MIB, devices=len(gpus),
                        bf16=first.get("compute_capability", 0.0) >= 8.0, cpu_cores=cores, ram_bytes=ram_total,
                        overhead_bytes=_table()["overhead_mib"]["cuda"] * MIB, details={"gpus": gpus, "torch": torch_view()})
    if sys.platform == "darwin" and platform.machine() == "arm64":
        chip = _sysctl("machdep.cpu.brand_string") or "Apple silicon"
        return Hardware(accelerator="metal", name=chip, memory_bytes=ram_total,
                        bf16=not chip.startswith("Apple M1"), cpu_cores=cores, ram_bytes=ram_total,
                        overhead_bytes=_table()["overhead_mib"]["metal"] * MIB)
    rss = process_rss()  # counted as the runtime's overhead, so given back to what is available
    return Hardware(accelerator="cpu", name=f"CPU ({platform.machine()})", memory_bytes=min(ram_total, ram_available + rss), cpu_cores=cores,
                    ram_bytes=ram_total, overhead_bytes=rss, details={"torch": torch_view()})


def cpu_cores() -> int:
    """Cores this process may run on (Slurm and cgroups restrict them), not the machine's total."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def memory() -> tuple[int, int]:
    """(total, available) RAM in bytes, within this process's cgroup limit where one is set."""
    if sys.platform == "darwin":
        total = int(_sysctl("hw.memsize") or 0)
        return total, total  # macOS reports no "available" figure that means what Linux's does
    info = parse_meminfo(Path("/proc/meminfo").read_text())
    total, available = info["MemTotal"], info.get("MemAvailable", info["MemTotal"])
    limit = cgroup_limit()
    if limit is not None and limit < total:
        used = _read_int(Path("/sys/fs/cgroup/memory.current")) or 0
        return limit, max(0, min(available, limit - used))
    return total, available


def parse_meminfo(text: str) -> dict[str, int]:
    values = {}
    for line in text.splitlines():
        match = re.match(r"(\w+):\s+(\d+) kB", line)
        if match:
            values[match.group(1)] = int(match.group(2)) * 1024
    return values


def cgroup_limit() -> int | None:
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        value = _read_int(path)
        if value is not None and value < 2**60:  # "max", or cgroup v1's "no limit" near 2**63
            return value
    return None


def process_rss() -> int:
    """This process's resident memory: on CPU, the libraries a training process also loads."""
    try:
        return parse_meminfo(Path("/proc/self/status").read_text()).get("VmRSS", 0)
    except OSError:
        return 0


def nvidia_gpus() -> list[dict[str, Any]]:
    """Each GPU nvidia-smi lists: name, memory, driver, compute capability. None without a driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = "name,memory.total,driver_version,compute_cap"
    try:
        result = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(result.stdout) if result.returncode == 0 else []


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    gpus = []
    for line in text.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 4:
            continue
        name, memory_mib, driver, capability = parts
        gpus.append({"name": name, "memory_mib": int(float(memory_mib)), "driver": driver,
                     "compute_capability": float(capability) if re.fullmatch(r"\d+(\.\d+)?", capability) else 0.0})
    return gpus


def torch_view() -> dict[str, Any]:
    """What the installed torch sees: its version, its CUDA build, and the GPUs it can use."""
    try:
        import torch
    except ImportError:
        return {"installed": False}
    return {"installed": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "device_count": torch.cuda.device_count()}


def _sysctl(name: str) -> str | None:
    try:
        result = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
