from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS / "helpers"))  # tests/helpers/: reference.py, the model and engine fixtures, cpp_build.py

pytest_plugins = ["export_fixtures"]  # the exported-model fixtures the export and deploy tests share


def pytest_configure(config: pytest.Config) -> None:
    """One compute thread: the tests' tensors are tiny, and on a busy 2-core machine several
    spinning OpenMP threads per process make them up to 100× slower (measured)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the subprocesses tests start
    try:
        import torch
    except ImportError:  # the runtime works without torch; so do its tests
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return TESTS / "data"
