"""What this process may use of the machine: the CPUs it can actually run on, and what they are.

``os.cpu_count()`` counts the machine's CPUs, not this process's: a container with a CPU
quota, or a process pinned with ``taskset``, gets fewer. Sizing a thread pool from it
oversubscribes the CPUs, and PyTorch's OpenMP threads, which spin while they wait for
each other, then slow down many times over. :func:`available_cpus` is the one place that
answers "how many threads", and :func:`prefer_passive_wait` / :data:`ORT_SPINNING` the one
place that decides how idle threads wait.

Waiting. PyTorch's OpenMP threads (libgomp) and ONNX Runtime's pool spin at the end of every
parallel region by default. On an idle machine that saves a wake-up; on a shared one the
spinning threads take the cores the working ones need, and a 2-thread upscale beside another
busy process ran many times slower than with sleeping threads (measured by
`lightbsr bench --contention`; see the committed CPU report). lightbsr therefore makes idle
threads sleep: ``OMP_WAIT_POLICY=PASSIVE`` (set when ``lightbsr`` is imported, unless the
variable is already set; it must be set before torch loads OpenMP, so import lightbsr before
torch) and ONNX Runtime sessions without ``session.intra_op.allow_spinning``.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
from pathlib import Path
from typing import Any

__all__ = [
    "ISA_FLAGS",
    "ORT_SPINNING",
    "available_cpus",
    "cgroup_cpu_limit",
    "cpu_isa",
    "cpu_name",
    "describe_machine",
    "prefer_passive_wait",
    "torch_threads",
    "wait_policy",
]

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


WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"
ORT_SPINNING = False
"""Whether ONNX Runtime's intra-op threads spin while they wait (``session.intra_op.allow_spinning``)."""


def prefer_passive_wait() -> None:
    """Make OpenMP threads sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``) unless the variable is set.

    OpenMP reads it when it is loaded: this has an effect on torch only if it runs before ``import torch``
    (``import lightbsr`` calls it).
    """
    os.environ.setdefault(WAIT_POLICY_VARIABLE, "PASSIVE")


def wait_policy() -> str:
    """The OpenMP wait policy in force for this process's torch, for reports: ``passive``, ``active`` or ``default``."""
    return (os.environ.get(WAIT_POLICY_VARIABLE) or "default").lower()


def torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads``, else at most :func:`available_cpus` (never raised); returns it.

    torch sizes its pool from the CPUs of its affinity mask, not from a cgroup CPU quota.
    """
    import torch

    if threads is not None and threads < 1:
        from lightbsr.errors import ConfigError

        raise ConfigError(f"threads must be ≥ 1, got {threads}")
    wanted = threads or min(torch.get_num_threads(), available_cpus())
    if wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)
    return wanted


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """The machine work runs on, for logs and reports: CPU model and ISA, usable CPUs, GPU, versions."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_isa": cpu_isa(),
        "cpus": available_cpus(),
        "omp_wait_policy": wait_policy(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info
