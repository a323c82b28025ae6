"""The TensorRT consumer of cpp/ (lightbsr-trt): what can be checked without TensorRT.

The TensorRT parts (src/trt_upscaler.cpp) build only where TensorRT's headers and library are
(the Docker images); here the build must leave them out cleanly, the command-line tool's OpenCV
image handling must compile against the TensorRT-free upscaler header, and every TensorRT
translation unit must compile (not link: there is no libnvinfer here) against NVIDIA's public
headers of TensorRT 10.3 (JetPack 6), 10.16 and 11.1 (../shared/third_party/tensorrt-headers),
with the CUDA runtime headers of the nvidia-cuda-runtime-cu12 and nvidia-cuda-nvcc-cu12 wheels.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cpp_build import BUILD, CPP, build_target

OPENCV_INCLUDE = Path("/usr/include/opencv4")
TENSORRT_HEADERS = CPP.parent.parent / "shared" / "third_party" / "tensorrt-headers"
TENSORRT_VERSIONS = ("10.3", "10.16", "11.1")
WARNINGS = ["-Wall", "-Wextra", "-Wpedantic", "-Wshadow", "-Wconversion", "-Wno-sign-conversion", "-Werror"]
TENSORRT_SOURCES = ("src/trt_upscaler.cpp",)  # every translation unit that includes TensorRT headers


def _cuda_includes() -> list[Path]:
    """include/ of the CUDA runtime wheel and of the nvcc wheel (crt/host_defines.h), or skip."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    found = []
    for wheel, header in (("cuda_runtime", "cuda_runtime_api.h"), ("cuda_nvcc", "crt/host_defines.h")):
        hits = [root / wheel / "include" for root in roots if (root / wheel / "include" / header).is_file()]
        if not hits:
            pytest.skip(f"needs the CUDA headers of the nvidia-{wheel.replace('_', '-')}-cu12 wheel (pip install it)")
        found.append(hits[0])
    return found


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


def test_engine_host_code_is_allowed_for_version_compatible_or_unchecked_engines(tmp_path: Path) -> None:
    """A version-compatible engine deserializes to nullptr unless IRuntime::setEngineHostCodeAllowed(true) (trtexec
    opts in for such engines); lightbsr-trt decides it with engine_host_code_allowed() from engine_meta.hpp."""
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("needs a C++17 compiler")
    source = tmp_path / "host_code.cpp"
    source.write_text(
        '#include <cstdio>\n#include "lightbsr/engine_meta.hpp"\n'
        "int main() {\n  lightbsr::EngineSidecar plain, compatible;\n  compatible.version_compatible = true;\n"
        '  std::printf("%d%d%d%d\\n", lightbsr::engine_host_code_allowed(plain, true),\n'
        "              lightbsr::engine_host_code_allowed(compatible, true),\n"
        "              lightbsr::engine_host_code_allowed(plain, false),\n"
        "              lightbsr::engine_host_code_allowed(compatible, false));\n}\n"
    )
    binary = tmp_path / "host_code"
    done = subprocess.run(
        [compiler, "-std=c++17", "-Wall", "-Werror", f"-I{CPP / 'include'}", str(source), "-o", str(binary)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    # checked plain engine: no; version-compatible: yes; --no-check (sidecar not trusted): yes
    assert subprocess.run([str(binary)], capture_output=True, text=True).stdout.split() == ["0111"]
    source = (CPP / "src" / "trt_upscaler.cpp").read_text()  # the call site is compiled by the tests below
    assert "if (engine_host_code_allowed(sidecar, options.check)) runtime->setEngineHostCodeAllowed(true);" in source


@pytest.mark.parametrize("version", TENSORRT_VERSIONS)
def test_tensorrt_sources_compile_against_the_real_headers(version: str) -> None:
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("needs a C++17 compiler")
    include = TENSORRT_HEADERS / version / "include"
    if not (include / "NvInferRuntime.h").is_file():
        pytest.skip(f"needs the TensorRT {version} headers in {TENSORRT_HEADERS} (shared/third_party)")
    system = [f"-isystem{include}", *(f"-isystem{path}" for path in _cuda_includes())]
    for source in TENSORRT_SOURCES:
        argv = [compiler, "-std=c++17", "-fsyntax-only", *WARNINGS, f"-I{CPP / 'include'}", *system, str(CPP / source)]
        done = subprocess.run(argv, capture_output=True, text=True)
        assert done.returncode == 0, f"{source} against TensorRT {version}:\n{done.stderr[-4000:]}"
