"""Configure and build targets of the C++ consumer (cpp/) for the tests, cached under build/cpp-tests.

The first build of a fresh checkout takes some seconds (most of it nlohmann/json in
the engine metadata library); later runs only check that nothing changed. Without
cmake or a C++ compiler the calling test is skipped, with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPP = ROOT / "cpp"
BUILD = ROOT / "build" / "cpp-tests"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def build_target(target: str) -> Path:
    """Path of the built executable ``target``; skips the test when it cannot be built here."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("needs cmake to build the C++ consumer (cpp/)")
    compiler = _compiler()
    if compiler is None:
        pytest.skip("needs a C++17 compiler (c++, g++ or clang++) to build the C++ consumer (cpp/)")
    configure = [cmake, "-S", str(CPP), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release", "-DLIGHTBSR_WERROR=ON",
                 f"-DCMAKE_CXX_COMPILER={shutil.which(compiler)}"]  # fmt: skip
    if not (BUILD / "CMakeCache.txt").is_file():
        BUILD.mkdir(parents=True, exist_ok=True)
        _run(configure)
    if not _has_target(cmake, target):
        _run(configure)  # a dependency may have been installed since the cached configure
        if not _has_target(cmake, target):
            pytest.skip(f"{target} is not configured here: it needs nlohmann/json (Debian: nlohmann-json3-dev)")
    _run([cmake, "--build", str(BUILD), "--target", target, "-j", str(os.cpu_count() or 2)])
    path = BUILD / target
    assert path.is_file(), f"{target} was not built"
    return path


def _has_target(cmake: str, target: str) -> bool:
    listing = subprocess.run([cmake, "--build", str(BUILD), "--target", "help"], capture_output=True, text=True)
    return re.search(rf"\b{re.escape(target)}\b", listing.stdout) is not None


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
