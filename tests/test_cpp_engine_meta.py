"""The C++ sidecar reader and compatibility check (cpp/, engine_check) against lightbsr.tensorrt.engine.

Same rules, same one-line messages: for every combination below, the C++ check must
accept with the same warnings or refuse with the same message as the Python one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
from pathlib import Path

import pytest
from cpp_build import build_target

from lightbsr.errors import EngineMismatchError
from lightbsr.tensorrt.engine import (
    EngineSidecar,
    GpuInfo,
    ShapeRange,
    check_compatibility,
    check_engine,
    sidecar_path,
    write_sidecar,
)

PROFILE = {"lr": ShapeRange((1, 3, 32, 32), (1, 3, 256, 256), (4, 3, 512, 512))}
ONNX_SHA = "a" * 64


@pytest.fixture(scope="module")
def engine_check() -> Path:
    return build_target("engine_check")


def _sidecar(**changes: object) -> EngineSidecar:
    fields: dict = {
        "tensorrt_version": "10.13.0.35",
        "gpu_name": "NVIDIA GeForce RTX 4090",
        "compute_capability": "8.9",
        "precision": "fp16",
        "profiles": (PROFILE,),
        "onnx_sha256": ONNX_SHA,
        "engine_sha256": "b" * 64,
        "onnx_metadata": {"lightbsr.scale": "4", "lightbsr.family": "lightbsr"},
    }
    fields.update(changes)
    return EngineSidecar(**fields)


def _run(tool: Path, *args: str) -> dict:
    done = subprocess.run([str(tool), *args], capture_output=True, text=True, check=False)
    assert done.returncode in (0, 3), done.stderr
    result = json.loads(done.stdout)
    assert (done.returncode == 0) == result["ok"]
    return result


def _python(check: object, *args: object, **kwargs: object) -> dict:
    try:
        result = check(*args, **kwargs)  # type: ignore[operator]
    except EngineMismatchError as err:
        return {"ok": False, "error": str(err)}
    warnings = result[1] if isinstance(result, tuple) else result
    return {"ok": True, "warnings": warnings}


SIDECARS = {
    "plain": {},
    "version-compatible": {"version_compatible": True},
    "ampere+": {"hardware_compatibility": "ampere+"},
    "same-cc": {"hardware_compatibility": "same-cc"},
    "trt10.3-vc": {"tensorrt_version": "10.3.0.30", "version_compatible": True},
    "trt8-vc": {"tensorrt_version": "8.6.1.6", "version_compatible": True},
    "cc-without-minor": {"compute_capability": "9", "gpu_name": "NVIDIA H100"},
}
RUNTIMES = [
    ("10.13.0.35", GpuInfo("NVIDIA GeForce RTX 4090", "8.9")),  # the build machine
    ("10.13.0.99", GpuInfo("NVIDIA GeForce RTX 4090", "8.9")),  # another build of the same release
    ("10.13", GpuInfo("NVIDIA L40S", "8.9")),  # short version, other GPU of the same compute capability
    ("10.14.1.48", GpuInfo("NVIDIA GeForce RTX 4090", "8.9")),  # newer minor
    ("10.3.0.30", GpuInfo("NVIDIA GeForce RTX 4090", "8.9")),  # older minor
    ("11.2.1.2", GpuInfo("NVIDIA A100-SXM4-80GB", "8.0")),  # next major, Ampere
    ("12.0.0.1", GpuInfo("NVIDIA GeForce RTX 4090", "8.9")),  # two majors on
    ("10.13.0.35", GpuInfo("Orin", "8.7")),  # Jetson
    ("10.13.0.35", GpuInfo("NVIDIA A100-SXM4-80GB", "8.0")),  # the first Ampere
    ("10.13.0.35", GpuInfo("NVIDIA GeForce RTX 3090", "8.6")),
    ("10.13.0.35", GpuInfo("Tesla T4", "7.5")),  # pre-Ampere
    ("10.13.0.35", GpuInfo("NVIDIA H100", "9.0")),
]


@pytest.mark.parametrize("kind", list(SIDECARS))
def test_compatibility_matches_python(engine_check: Path, tmp_path: Path, kind: str) -> None:
    sidecar = _sidecar(**SIDECARS[kind])
    path = tmp_path / "model.engine.json"
    path.write_text(json.dumps(sidecar.to_json()))
    for (version, gpu), onnx in itertools.product(RUNTIMES, (None, ONNX_SHA, "c" * 64)):
        expected = _python(
            check_compatibility, sidecar, tensorrt_version=version, gpu=gpu, onnx_sha256=onnx, engine="model.engine"
        )
        args = ["--sidecar", str(path), "--trt-version", version, "--gpu-name", gpu.name, "--cc"]
        args += [gpu.compute_capability, "--engine-name", "model.engine"]
        if onnx is not None:
            args += ["--onnx-sha256", onnx]
        assert _run(engine_check, *args) == expected, (kind, version, gpu, onnx)


RULES = {
    "was built with TensorRT": "other TensorRT, not version-compatible",
    "does not extend to the installed TensorRT": "version-compatible, but not to this TensorRT",
    "is built for Ampere and newer GPUs": "ampere+ engine on an older GPU",
    "was built for": "other compute capability",
    "was built from another ONNX": "other ONNX",
    "it may be slower": "runs, with a warning",
}


def _outcome(result: dict) -> str:
    text = result["error"] if not result["ok"] else " ".join(result["warnings"]) or "runs"
    return next((rule for key, rule in RULES.items() if key in text), text)


def test_the_matrix_exercises_every_rule() -> None:
    """The cases above reach every outcome of the Python check (so the comparison means something)."""
    outcomes = set()
    for kind, (version, gpu), onnx in itertools.product(SIDECARS, RUNTIMES, (None, "c" * 64)):
        sidecar = _sidecar(**SIDECARS[kind])
        outcomes.add(
            _outcome(_python(check_compatibility, sidecar, tensorrt_version=version, gpu=gpu, onnx_sha256=onnx))
        )
    assert outcomes == {"runs", *RULES.values()}


def test_engine_file_checks_match_python(engine_check: Path, tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(bytes(range(256)) * 40)
    runtime = ["--trt-version", "10.13.0.35", "--gpu-name", "NVIDIA GeForce RTX 4090", "--cc", "8.9"]
    gpu = GpuInfo("NVIDIA GeForce RTX 4090", "8.9")

    def both() -> tuple[dict, dict]:
        python = _python(check_engine, engine, tensorrt_version="10.13.0.35", gpu=gpu)
        return _run(engine_check, "--engine", str(engine), *runtime), python

    cpp, python = both()  # no sidecar yet
    assert cpp == python and not cpp["ok"] and "no sidecar model.engine.json" in cpp["error"]

    write_sidecar(engine, _sidecar(engine_sha256=hashlib.sha256(engine.read_bytes()).hexdigest()))
    cpp, python = both()
    assert cpp == python == {"ok": True, "warnings": []}

    engine.write_bytes(engine.read_bytes() + b"\0")  # replaced after the build
    cpp, python = both()
    assert cpp == python and "does not match its sidecar" in cpp["error"]

    sidecar_path(engine).write_text('{"schema": "lightbsr.engine/1", "tensorrt_version": 10}')
    cpp, python = both()
    assert not cpp["ok"] and not python["ok"]
    assert cpp["error"].startswith(f"{sidecar_path(engine)}: corrupt engine sidecar (")
    assert python["error"].startswith(f"{sidecar_path(engine)}: corrupt engine sidecar (")

    engine.unlink()
    cpp, python = both()
    assert cpp == python and cpp["error"] == f"{engine}: no such engine file"


@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 1000, (1 << 20) + 3])
def test_sha256_matches_hashlib(engine_check: Path, tmp_path: Path, size: int) -> None:
    data = bytes((i * 131 + 7) % 256 for i in range(size))
    path = tmp_path / "blob"
    path.write_bytes(data)
    done = subprocess.run([str(engine_check), "--sha256", str(path)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == hashlib.sha256(data).hexdigest()
