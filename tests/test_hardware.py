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


def test_passive_wait_is_the_default_and_a_users_choice_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightbsr.hardware import prefer_passive_wait, wait_policy

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert wait_policy() == "default"
    prefer_passive_wait()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and wait_policy() == "passive"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    prefer_passive_wait()
    assert wait_policy() == "active"


def test_importing_lightbsr_sets_the_policy_before_torch_loads_openmp() -> None:
    import subprocess
    import sys

    code = "import os, lightbsr, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_torch_threads_are_capped_to_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lightbsr import hardware
    from lightbsr.errors import ConfigError

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(hardware, "available_cpus", lambda *a: 1)
        assert hardware.torch_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(hardware, "available_cpus", lambda *a: 8)
        assert hardware.torch_threads() == 1  # never raised above what it is
        assert hardware.torch_threads(3) == 3 and torch.get_num_threads() == 3  # asked for: as asked
        with pytest.raises(ConfigError, match="threads must be"):
            hardware.torch_threads(-1)
    finally:
        torch.set_num_threads(before)
