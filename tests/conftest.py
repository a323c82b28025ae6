from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # tests/reference.py and friends


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return TESTS / "data"
