"""How many CPUs this process may use: affinity mask and cgroup quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightbsr.hardware import available_cpus, cgroup_cpu_limit


def _v2(tmp_path: Path, text: str) -> Path:
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def test_cgroup_v2_quota_in_cpus(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(_v2(tmp_path, "150000 100000\n")) == 1.5
    assert cgroup_cpu_limit(_v2(tmp_path, "max 100000\n")) is None


def test_cgroup_v1_quota_in_cpus(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 0.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_available_cpus_is_the_affinity_capped_by_the_quota(tmp_path: Path) -> None:
    mask = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == mask  # no quota files there
    assert available_cpus(_v2(tmp_path, "150000 100000")) == min(mask, 2)  # 1.5 CPUs → 2 threads
    assert available_cpus(_v2(tmp_path, "1000 100000")) == 1  # never 0
