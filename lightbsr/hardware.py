"""What this process may use of the machine: the CPUs it can actually run on, and what they are.

``os.cpu_count()`` counts the machine's CPUs, not this process's: a container with a CPU
quota, or a process pinned with ``taskset``, gets fewer. Sizing a thread pool from it
oversubscribes the CPUs, and PyTorch's OpenMP threads, which spin while they wait for
each other, then slow down many times over. :func:`available_cpus` is the one place that
answers "how many threads".
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["ISA_FLAGS", "available_cpus", "cgroup_cpu_limit", "cpu_isa", "cpu_name", "describe_machine"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_CPUINFO = Path("/proc/cpuinfo")

ISA_FLAGS = (
    "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
    "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
"""The x86 extensions that decide CPU inference speed here (FP32 width, INT8 dot products, BF16)."""


def _cpuinfo_field(name: str, cpuinfo: Path) -> str | None:
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    return None


def cpu_name(cpuinfo: Path = _CPUINFO) -> str:
    """The CPU model ("AMD EPYC 9R14"), or the platform's processor name where /proc/cpuinfo is absent."""
    return _cpuinfo_field("model name", cpuinfo) or platform.processor() or platform.machine()


def cpu_isa(cpuinfo: Path = _CPUINFO) -> list[str]:
    """Which of :data:`ISA_FLAGS` this CPU reports (empty where /proc/cpuinfo is absent, e.g. not Linux/x86)."""
    flags = set((_cpuinfo_field("flags", cpuinfo) or "").split())
    return [flag for flag in ISA_FLAGS if flag in flags]


def cgroup_cpu_limit(root: Path = _CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (``quota / period``), or ``None`` when unlimited or unknown.

    Reads cgroup v2 (``cpu.max``: ``"max 100000"`` or ``"150000 100000"``) and falls back to cgroup v1
    (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; a quota of -1 is unlimited).
    """
    try:
        fields = (root / "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        if fields:
            return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus(root: Path = _CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup quota (rounded up), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_limit(root)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """The machine work runs on, for logs and reports: CPU model and ISA, usable CPUs, GPU, versions."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_isa": cpu_isa(),
        "cpus": available_cpus(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info
