"""The TensorRT consumer of cpp/ (lightbsr-trt): what can be checked without TensorRT.

The TensorRT parts (src/trt_upscaler.cpp) build only where TensorRT's headers and library are
(the Docker images); here the build must leave them out cleanly, and the command-line tool's
OpenCV image handling must compile against the TensorRT-free upscaler header.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cpp_build import BUILD, CPP, build_target

OPENCV_INCLUDE = Path("/usr/include/opencv4")


def test_auto_configure_without_tensorrt_skips_the_upscaler() -> None:
    build_target("tile_plan")  # configures build/cpp-tests with the default LIGHTBSR_WITH_TENSORRT=AUTO
    cache = (BUILD / "CMakeCache.txt").read_text()
    assert "LIGHTBSR_WITH_TENSORRT:STRING=AUTO" in cache
    if "TENSORRT_INCLUDE_DIR:PATH=" in cache and "TENSORRT_INCLUDE_DIR-NOTFOUND" not in cache:
        pytest.skip("TensorRT headers are installed here: the upscaler is built, not skipped")
    listing = subprocess.run(["cmake", "--build", str(BUILD), "--target", "help"], capture_output=True, text=True)
    assert "lightbsr_trt_upscale" not in listing.stdout


def test_tool_compiles_against_opencv() -> None:
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("needs a C++17 compiler")
    if not (OPENCV_INCLUDE / "opencv2" / "imgcodecs.hpp").is_file():
        pytest.skip("needs the OpenCV headers (Debian: libopencv-dev) to compile tools/lightbsr_trt.cpp")
    argv = [compiler, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Wpedantic", "-Wshadow", "-Wconversion",
            "-Wno-sign-conversion", "-Werror", f"-I{CPP / 'include'}", f"-isystem{OPENCV_INCLUDE}",
            str(CPP / "tools" / "lightbsr_trt.cpp")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
