"""The TensorRT call sequence of the builder, against a recording stand-in for the ``tensorrt`` module.

This checks what lightbsr asks of TensorRT (flags, profiles, files written, errors
reported) where TensorRT cannot be installed; whether TensorRT accepts it is what
test_tensorrt_gpu.py checks on a GPU machine.
"""

from __future__ import annotations

import enum
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import tensorrt_onnx

from lightbsr.errors import EngineBuildError, ModelFileError
from lightbsr.tensorrt import builder, loader
from lightbsr.tensorrt.engine import BuildSettings, GpuInfo, ShapeRange, check_engine, sidecar_path

GPU = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")


class FakeTensorRT(types.ModuleType):
    """Just enough of the tensorrt module for build_engine; records every configuration call."""

    def __init__(self, version: str, parse_ok: bool = True, build_ok: bool = True) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list[tuple[Any, ...]] = []
        self.live_parsers = 0  # OnnxParser objects not yet garbage-collected
        fake = self

        class Severity(enum.IntEnum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3

        class ILogger:
            def __init__(self) -> None:
                pass

        ILogger.Severity = Severity  # type: ignore[attr-defined]

        class IProgressMonitor:
            def __init__(self) -> None:
                pass

        class Config:
            def set_flag(self, flag: str) -> None:
                fake.calls.append(("flag", flag))

            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                fake.calls.append(("pool", pool, size))

            def create_timing_cache(self, data: bytes) -> bytes:
                fake.calls.append(("timing cache in", data))
                return data

            def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> None:
                pass

            def get_timing_cache(self) -> Any:
                return types.SimpleNamespace(serialize=lambda: b"timings")

            def add_optimization_profile(self, profile: dict) -> None:
                fake.calls.append(("profile", dict(profile)))

            def __setattr__(self, name: str, value: Any) -> None:
                fake.calls.append((name, value))

        class Profile(dict):
            def set_shape(self, name: str, lo: list, opt: list, hi: list) -> None:
                self[name] = (tuple(lo), tuple(opt), tuple(hi))

        class Builder:
            def __init__(self, logger: ILogger) -> None:
                self.logger = logger

            def create_network(self, flags: int) -> str:
                fake.calls.append(("network flags", flags))
                return "network"

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: str, config: Config) -> bytes | None:
                if not fake.live_parsers:  # the network points into weights its parser owns (as in TensorRT)
                    self.logger.log(Severity.ERROR, "the network's weights were freed with its OnnxParser")
                    return None
                if not build_ok:
                    self.logger.log(Severity.ERROR, "out of\nmemory")  # type: ignore[attr-defined]
                    return None
                return b"serialized plan"

        class ParserError:
            def desc(self) -> str:
                return "Unsupported operator\nFooOp"

            def node(self) -> int:
                return 3

            def node_name(self) -> str:
                return "/foo/Foo"

            def node_operator(self) -> str:
                return "FooOp"

        class OnnxParser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network: str, logger: ILogger) -> None:
                fake.live_parsers += 1

            def __del__(self) -> None:
                fake.live_parsers -= 1

            def parse_from_file(self, path: str) -> bool:
                fake.calls.append(("parse", path))
                return parse_ok

            def get_error(self, index: int) -> ParserError:
                return ParserError()

        names = types.SimpleNamespace
        self.ILogger, self.IProgressMonitor, self.Builder, self.OnnxParser = (
            ILogger,
            IProgressMonitor,
            Builder,
            OnnxParser,
        )
        self.NetworkDefinitionCreationFlag = names(STRONGLY_TYPED=1)
        self.BuilderFlag = names(FP16="FP16", INT8="INT8", VERSION_COMPATIBLE="VERSION_COMPATIBLE")
        self.HardwareCompatibilityLevel = names(
            NONE="NONE", AMPERE_PLUS="AMPERE_PLUS", SAME_COMPUTE_CAPABILITY="SAME_COMPUTE_CAPABILITY"
        )
        self.MemoryPoolType = names(WORKSPACE="WORKSPACE")
        self.Runtime = object  # the real module has one; the import probe looks for it
        self.Dims = list

    def configured(self, kind: str) -> list[Any]:
        return [call[1:] if len(call) > 2 else call[1] for call in self.calls if call[0] == kind]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tensorrt_onnx.onnx_graphs(tmp_path_factory)


def install(monkeypatch: pytest.MonkeyPatch, fake: FakeTensorRT) -> FakeTensorRT:
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(loader, "detect_gpu", lambda device=0: GPU)
    return fake


def test_weakly_typed_trt10_build_with_a_stand_in(
    graphs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trt = install(monkeypatch, FakeTensorRT("10.13.0.35"))
    engine, timing = tmp_path / "m.engine", tmp_path / "timing.cache"
    timing.write_bytes(b"old timings")
    settings = BuildSettings(
        profiles=(ShapeRange((1, 3, 8, 8), (1, 3, 16, 16), (2, 3, 32, 32)),) * 2,
        fp16=True,
        workspace_mib=256,
        builder_optimization_level=4,
        version_compatible=True,
        hardware_compatibility="ampere+",
    )
    sidecar = builder.build_engine(graphs["lightbsr_restorer"], engine, settings, timing_cache=timing, progress=False)
    assert trt.configured("network flags") == [0]
    assert trt.configured("flag") == ["FP16", "VERSION_COMPATIBLE"]
    assert trt.configured("pool") == [("WORKSPACE", 256 << 20)]
    assert trt.configured("builder_optimization_level") == [4]
    assert trt.configured("hardware_compatibility_level") == ["AMPERE_PLUS"]
    assert trt.configured("timing cache in") == [b"old timings"] and timing.read_bytes() == b"timings"
    profiles = trt.configured("profile")
    assert len(profiles) == 2 and profiles[0]["idr_spatial"] == ((1, 8, 8, 8), (1, 8, 16, 16), (2, 8, 32, 32))
    assert engine.read_bytes() == b"serialized plan"
    assert json.loads(sidecar_path(engine).read_text())["builder_flags"] == ["FP16", "VERSION_COMPATIBLE"]
    assert sidecar.precision == "fp16" and sidecar.gpu_name == GPU.name and sidecar.version_compatible
    check_engine(engine, tensorrt_version="10.13.0.35", gpu=GPU, onnx_sha256=sidecar.onnx_sha256)


def test_strongly_typed_builds_with_a_stand_in(
    graphs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trt10 = install(monkeypatch, FakeTensorRT("10.3.0"))
    builder.build_engine(graphs["qdq"], tmp_path / "q10.engine", BuildSettings(int8=True), progress=False)
    assert trt10.configured("network flags") == [1 << 1] and trt10.configured("flag") == []
    trt11 = install(monkeypatch, FakeTensorRT("11.4.0.106"))
    sidecar = builder.build_engine(graphs["qdq"], tmp_path / "q11.engine", BuildSettings())
    assert trt11.configured("network flags") == [0] and trt11.configured("flag") == []
    (monitor,) = trt11.configured("progress_monitor")  # progress bars, driven as TensorRT would
    monitor.phase_start("Building engine", None, 2)
    monitor.phase_start("Tactic selection", "Building engine", 3)
    assert all(monitor.step_complete("Tactic selection", step) for step in range(3))
    monitor.phase_finish("Tactic selection")
    assert monitor.step_complete("Building engine", 0)
    monitor.phase_finish("Building engine")
    monitor.phase_finish("never started")
    assert sidecar.strongly_typed and sidecar.precision == "int8"


def test_parse_and_build_failures_are_one_line_and_write_nothing_with_a_stand_in(
    graphs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, FakeTensorRT("10.13", parse_ok=False))
    with pytest.raises(ModelFileError, match="cannot parse it: Unsupported operator FooOp at node /foo/Foo") as info:
        builder.build_engine(graphs["lightbsr_full"], tmp_path / "m.engine", BuildSettings(), progress=False)
    assert "\n" not in str(info.value)
    install(monkeypatch, FakeTensorRT("10.13", build_ok=False))
    with pytest.raises(EngineBuildError, match=r"could not build .*: out of memory$"):
        builder.build_engine(graphs["lightbsr_full"], tmp_path / "m.engine", BuildSettings(), progress=False)
    assert "[TensorRT] ERROR" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_build_without_a_gpu_with_a_stand_in(
    graphs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightbsr.cli import main

    install(monkeypatch, FakeTensorRT("10.13"))
    monkeypatch.setattr(loader, "detect_gpu", lambda device=0: None)
    assert main(["build", str(graphs["lightbsr_full"]), "-o", str(tmp_path / "m.engine")]) == 2
    assert list(tmp_path.iterdir()) == []


def test_parser_outlives_the_build_with_a_stand_in(
    graphs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stand-in TensorRT (no GPU here) whose network dies with its OnnxParser, as the real one's weights do."""
    install(monkeypatch, FakeTensorRT("10.13.0.35"))
    sidecar = builder.build_engine(graphs["lightbsr_full"], tmp_path / "m.engine", BuildSettings(), progress=False)
    assert (tmp_path / "m.engine").read_bytes() == b"serialized plan" and sidecar.precision == "fp32"


def test_build_selects_and_records_the_device_with_a_stand_in(
    graphs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stand-in TensorRT and CUDA (no GPU here): two GPUs; TensorRT builds on the current device."""
    from lightbsr import cuda

    trt = install(monkeypatch, FakeTensorRT("10.13.0.35"))
    gpus = {0: GpuInfo("NVIDIA A100-SXM4-80GB", "8.0"), 1: GPU}
    monkeypatch.setattr(loader, "detect_gpu", lambda device=0: gpus.get(device))
    monkeypatch.setattr(cuda, "select_device", lambda device: trt.calls.append(("device", device)))
    sidecar = builder.build_engine(graphs["lightbsr_full"], tmp_path / "m.engine", BuildSettings(), device=1)
    assert sidecar.gpu_name == GPU.name and trt.calls[0] == ("device", 1)  # selected before anything else
