"""Engine sidecar, compatibility checks and the engine cache (lightbsr.tensorrt.engine; no TensorRT needed)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightbsr.errors import ConfigError, EngineMismatchError
from lightbsr.files import sha256_file
from lightbsr.tensorrt.engine import (
    BuildSettings,
    EngineCache,
    EngineSidecar,
    GpuInfo,
    ShapeRange,
    cache_key,
    check_compatibility,
    check_engine,
    default_cache_dir,
    read_sidecar,
    sidecar_path,
    version_compatible_runtime,
    write_sidecar,
)

H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
ORIN = GpuInfo("Orin", "8.7")
A10 = GpuInfo("NVIDIA A10", "8.6")
T4 = GpuInfo("Tesla T4", "7.5")
ONNX_SHA = "a" * 64


def sidecar(**changes: object) -> EngineSidecar:
    base = EngineSidecar(
        tensorrt_version="10.13.0.35",
        gpu_name=H100.name,
        compute_capability=H100.compute_capability,
        precision="fp16",
        profiles=({"lr": ShapeRange((1, 3, 64, 64), (1, 3, 256, 256), (4, 3, 512, 512))},),
        onnx_sha256=ONNX_SHA,
        engine_sha256="b" * 64,
        onnx_metadata={"lightbsr.arch": "lightbsr_student_x4", "lightbsr.scale": "4", "lightbsr.graph": "full"},
        builder_flags=("FP16",),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def write_engine(path: Path, payload: bytes = b"plan", **changes: object) -> Path:
    path.write_bytes(payload)
    write_sidecar(path, sidecar(engine_sha256=sha256_file(path), **changes))
    return path


def test_sidecar_round_trip(tmp_path: Path) -> None:
    engine = write_engine(tmp_path / "model.engine")
    assert sidecar_path(engine) == tmp_path / "model.engine.json"
    data = json.loads(sidecar_path(engine).read_text())
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "precision", "profiles", "onnx_sha256"):
        assert key in data
    assert data["profiles"][0]["lr"] == {"min": [1, 3, 64, 64], "opt": [1, 3, 256, 256], "max": [4, 3, 512, 512]}
    assert {"lightbsr_version", "created_at", "version_compatible", "hardware_compatibility"} <= data.keys()
    loaded = read_sidecar(engine)
    assert loaded == sidecar(engine_sha256=sha256_file(engine), created_at=loaded.created_at)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no sidecar"),
        ("{not json", "corrupt engine sidecar"),
        ('{"schema": "lightbsr.engine/99"}', "corrupt engine sidecar.*schema"),
        ('{"schema": "lightbsr.engine/1", "tensorrt_version": "10.13"}', "corrupt engine sidecar"),
        ("[]", "corrupt engine sidecar"),
    ],
)
def test_missing_or_corrupt_sidecar_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    if content is not None:
        sidecar_path(engine).write_text(content)
    with pytest.raises(EngineMismatchError, match=message) as info:
        check_engine(engine, tensorrt_version="10.13.0.35", gpu=H100)
    assert "\n" not in str(info.value)


def test_replaced_engine_bytes_are_detected(tmp_path: Path) -> None:
    engine = write_engine(tmp_path / "model.engine")
    check_engine(engine, tensorrt_version="10.13.0.35", gpu=H100, onnx_sha256=ONNX_SHA)
    engine.write_bytes(b"another plan")
    with pytest.raises(EngineMismatchError, match="does not match its sidecar"):
        check_engine(engine, tensorrt_version="10.13.0.35", gpu=H100)


@pytest.mark.parametrize(
    ("changes", "version", "gpu", "message"),
    [
        ({}, "10.3.0.30", H100, "built with TensorRT 10.13.0.35 but TensorRT 10.3.0.30 is installed"),
        ({}, "10.13.0.35", A10, r"built for NVIDIA H100.*9\.0.*this GPU is NVIDIA A10.*8\.6"),
        ({"hardware_compatibility": "same-cc"}, "10.13.0.35", A10, "compute capability"),
        ({"hardware_compatibility": "ampere+"}, "10.13.0.35", T4, "Ampere and newer"),
        ({"version_compatible": True}, "10.12.0.36", H100, "does not extend"),  # older runtime
        ({"version_compatible": True}, "12.0", H100, "does not extend"),
        ({}, "10.13.1.12", H100, "built with TensorRT 10.13.0.35 but TensorRT 10.13.1.12"),  # another patch release
        ({}, "10.14.0.35", H100, "built with TensorRT 10.13.0.35 but TensorRT 10.14.0.35"),  # another minor
        ({"hardware_compatibility": "ampere+"}, "10.13.0.35", GpuInfo("Tesla V100", "7.5"), "Ampere and newer"),
    ],
)
def test_mismatches_are_explained(changes: dict, version: str, gpu: GpuInfo, message: str) -> None:
    with pytest.raises(EngineMismatchError, match=message) as info:
        check_compatibility(sidecar(**changes), tensorrt_version=version, gpu=gpu)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("changes", "version", "gpu"),
    [
        ({}, "10.13.0.35", H100),
        ({}, "10.13.0.35.post1", H100),  # same release, repackaged
        ({"hardware_compatibility": "ampere+"}, "10.13.0.35", A10),
        ({"hardware_compatibility": "ampere+"}, "10.13.0.35", GpuInfo("NVIDIA A100-SXM4-80GB", "8.0")),  # the edge
        ({}, "10.13.0.36", H100),  # only the build number differs: the same release
        ({"hardware_compatibility": "ampere+"}, "10.13.0.35", ORIN),
        ({"version_compatible": True}, "10.16.1.11", H100),
        ({"version_compatible": True}, "11.4.0.106", H100),  # documented 10 → 11
    ],
)
def test_compatible_engines_pass(changes: dict, version: str, gpu: GpuInfo) -> None:
    assert check_compatibility(sidecar(**changes), tensorrt_version=version, gpu=gpu) == []


def test_other_gpu_of_the_same_capability_only_warns() -> None:
    warnings = check_compatibility(sidecar(), tensorrt_version="10.13.0.35", gpu=GpuInfo("NVIDIA H100 PCIe", "9.0"))
    assert len(warnings) == 1 and "may be slower" in warnings[0]
    same_cc = sidecar(hardware_compatibility="same-cc")
    assert check_compatibility(same_cc, tensorrt_version="10.13.0.35", gpu=GpuInfo("NVIDIA H100 PCIe", "9.0")) == []


def test_onnx_hash_mismatch() -> None:
    with pytest.raises(EngineMismatchError, match="another ONNX"):
        check_compatibility(sidecar(), tensorrt_version="10.13.0.35", gpu=H100, onnx_sha256="c" * 64)


def test_version_compatible_runtime_rule() -> None:
    assert version_compatible_runtime("10.3.0", "10.16.1")
    assert version_compatible_runtime("8.6.1", "10.0.1")
    assert not version_compatible_runtime("10.16.1", "10.3.0")
    assert not version_compatible_runtime("8.6.1", "11.0.0")


def test_build_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="hardware compatibility"):
        BuildSettings(hardware_compatibility="turing+")
    with pytest.raises(ConfigError, match="0 to 5"):
        BuildSettings(builder_optimization_level=6)
    with pytest.raises(ConfigError, match="workspace"):
        BuildSettings(workspace_mib=0)
    with pytest.raises(ConfigError, match="NCHW"):
        BuildSettings(profiles=(ShapeRange((1, 64), (1, 64), (1, 64)),))


def test_cache_key_changes_with_every_field() -> None:
    settings = BuildSettings()
    key = cache_key(ONNX_SHA, "10.13.0.35", H100, settings)
    assert key == cache_key(ONNX_SHA, "10.13.0.35", H100, BuildSettings())
    variants = {
        cache_key("d" * 64, "10.13.0.35", H100, settings),
        cache_key(ONNX_SHA, "10.13.3.9", H100, settings),
        cache_key(ONNX_SHA, "10.13.0.35", GpuInfo(H100.name, "8.9"), settings),
        cache_key(ONNX_SHA, "10.13.0.35", GpuInfo("NVIDIA H200", "9.0"), settings),
        cache_key(ONNX_SHA, "10.13.0.35", H100, settings, lightbsr_version="0.0.0-other"),
        cache_key(ONNX_SHA, "10.13.0.35", H100, BuildSettings(fp16=True)),
        cache_key(ONNX_SHA, "10.13.0.35", H100, BuildSettings(int8=True)),
        cache_key(ONNX_SHA, "10.13.0.35", H100, BuildSettings(strongly_typed=True)),
        cache_key(ONNX_SHA, "10.13.0.35", H100, BuildSettings(workspace_mib=512)),
        cache_key(ONNX_SHA, "10.13.0.35", H100, BuildSettings(builder_optimization_level=5)),
        cache_key(ONNX_SHA, "10.13.0.35", H100, BuildSettings(version_compatible=True)),
        cache_key(ONNX_SHA, "10.13.0.35", H100, BuildSettings(hardware_compatibility="ampere+")),
        cache_key(
            ONNX_SHA,
            "10.13.0.35",
            H100,
            BuildSettings(profiles=(ShapeRange((1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 9, 9)),)),
        ),
    }
    assert len(variants) == 13 and key not in variants


def test_cache_builds_once_and_rebuilds_stale_entries(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx bytes")
    builds: list[Path] = []

    def build(onnx_path: Path, engine: Path, settings: BuildSettings) -> EngineSidecar:
        builds.append(engine)
        engine.parent.mkdir(parents=True, exist_ok=True)
        engine.write_bytes(b"plan for " + onnx_path.read_bytes())
        result = sidecar(onnx_sha256=sha256_file(onnx_path), engine_sha256=sha256_file(engine))
        write_sidecar(engine, result)
        return result

    cache = EngineCache(tmp_path / "cache")
    first = cache.get_or_build(onnx, BuildSettings(), tensorrt_version="10.13.0.35", gpu=H100, build=build)
    again = cache.get_or_build(onnx, BuildSettings(), tensorrt_version="10.13.0.35", gpu=H100, build=build)
    assert first == again and len(builds) == 1 and first.parent == tmp_path / "cache"
    other = cache.get_or_build(onnx, BuildSettings(fp16=True), tensorrt_version="10.13.0.35", gpu=H100, build=build)
    assert other != first and len(builds) == 2
    first.write_bytes(b"truncated")  # a damaged entry is rebuilt, not loaded
    assert cache.get_or_build(onnx, BuildSettings(), tensorrt_version="10.13.0.35", gpu=H100, build=build) == first
    assert len(builds) == 3 and sorted(cache.entries()) == sorted({first, other})


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIGHTBSR_CACHE", str(tmp_path / "engines"))
    assert default_cache_dir() == tmp_path / "engines"
    monkeypatch.delenv("LIGHTBSR_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "lightbsr" / "engines"


def test_engine_module_imports_without_torch_or_tensorrt() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['tensorrt'] = None\n"
        "import lightbsr.tensorrt.engine, lightbsr.tensorrt, lightbsr.tensorrt.loader, lightbsr.export.build_cli\n"
        "import lightbsr.tensorrt.builder, lightbsr.tensorrt.autobuild, lightbsr.runtime.tensorrt_backend\n"
        "assert 'onnx' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
