"""Real TensorRT builds of the fixture ONNX graphs, run on the GPU and compared with ONNX Runtime (CPU).

Skipped, with the reason, unless the TensorRT Python bindings, an NVIDIA GPU and a CUDA
build of torch (for device buffers) are all present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorrt_onnx

from lightbsr.cli import main
from lightbsr.errors import EngineMismatchError
from lightbsr.tensorrt.builder import build_engine
from lightbsr.tensorrt.engine import BuildSettings, EngineCache, ShapeRange, detect_gpu, sidecar_path
from lightbsr.tensorrt.loader import EngineLoader, import_tensorrt, installed_version

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt]

SMALL = ["--min-shape", "1x3x8x8", "--opt-shape", "1x3x16x16", "--max-shape", "2x3x32x32"]


@pytest.fixture(scope="module")
def trt_version() -> str:
    version = installed_version()
    if version is None:
        pytest.skip("needs the TensorRT Python bindings (pip install lightbsr[trt])")
    if detect_gpu() is None:
        pytest.skip("needs an NVIDIA GPU")
    torch = pytest.importorskip("torch", reason="needs torch for device buffers")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA build of torch for device buffers")
    return version


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory, trt_version: str) -> dict[str, Path]:
    return tensorrt_onnx.onnx_graphs(tmp_path_factory)


def load_engine(engine_path: Path) -> Any:
    """Check the sidecar, then deserialize (the loader stays alive with the engine)."""
    found, gpu = import_tensorrt(full=True), detect_gpu()
    assert found is not None and gpu is not None
    loader = EngineLoader(found, gpu)
    sidecar, _ = loader.check(engine_path)
    engine = loader.load(engine_path, sidecar)
    engine.loader = loader  # keep the runtime and logger alive as long as the engine
    return engine


def run_engine(engine_path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import tensorrt as trt
    import torch

    engine = load_engine(engine_path)
    context = engine.create_execution_context()
    keep = {}
    for name, array in inputs.items():
        keep[name] = torch.from_numpy(np.ascontiguousarray(array)).cuda()
        assert context.set_input_shape(name, tuple(array.shape))
        assert context.set_tensor_address(name, keep[name].data_ptr())
    dtype = torch.from_numpy(np.empty(0, trt.nptype(engine.get_tensor_dtype("sr")))).dtype
    out = torch.empty(tuple(context.get_tensor_shape("sr")), dtype=dtype, device="cuda")
    assert context.set_tensor_address("sr", out.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out.float().cpu().numpy()


def run_ort(onnx_path: Path, inputs: dict[str, np.ndarray]) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(["sr"], inputs)[0]


def build(onnx: Path, engine: Path, *extra: str) -> dict[str, Any]:
    assert main(["build", str(onnx), "-o", str(engine), *SMALL, *extra]) == 0
    return json.loads(sidecar_path(engine).read_text())


def lr(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 3, height, width), dtype=np.float32)


def test_fp32_full_graph_matches_onnxruntime(graphs: dict[str, Path], tmp_path: Path, trt_version: str) -> None:
    engine = tmp_path / "full.engine"
    sidecar = build(graphs["lightbsr_full"], engine, "--timing-cache", str(tmp_path / "timing.cache"))
    gpu = detect_gpu()
    assert gpu is not None
    assert sidecar["tensorrt_version"] == trt_version and sidecar["compute_capability"] == gpu.compute_capability
    assert sidecar["precision"] == "fp32" and sidecar["onnx_metadata"]["lightbsr.graph"] == "full"
    assert (tmp_path / "timing.cache").stat().st_size > 0
    for shape in ((1, 8, 8), (2, 13, 29), (1, 32, 32)):
        inputs = {"lr": lr(*shape)}
        np.testing.assert_allclose(run_engine(engine, inputs), run_ort(graphs["lightbsr_full"], inputs), atol=5e-3)


def test_restorer_graph_with_idr_inputs(graphs: dict[str, Path], tmp_path: Path, trt_version: str) -> None:
    engine = tmp_path / "restorer.engine"
    sidecar = build(graphs["lightbsr_restorer"], engine)
    assert set(sidecar["profiles"][0]) == {"lr", "idr_channel", "idr_spatial"}
    rng = np.random.default_rng(1)
    inputs = {
        "lr": lr(2, 12, 20),
        "idr_channel": rng.random((2, 48), dtype=np.float32),
        "idr_spatial": rng.random((2, 8, 12, 20), dtype=np.float32),
    }
    np.testing.assert_allclose(run_engine(engine, inputs), run_ort(graphs["lightbsr_restorer"], inputs), atol=5e-3)


def test_fp16_engine(graphs: dict[str, Path], tmp_path: Path, trt_version: str) -> None:
    engine = tmp_path / "fp16.engine"
    if trt_version.startswith("10."):
        sidecar = build(graphs["lightbsr_full"], engine, "--fp16")  # weakly typed, FP16 allowed
        reference = graphs["lightbsr_full"]
        assert sidecar["builder_flags"] == ["FP16"]
    else:
        sidecar = build(graphs["fp16"], engine)  # TensorRT 11: precision from the converted ONNX
        reference = graphs["fp16"]
        assert sidecar["strongly_typed"]
    assert sidecar["precision"] == "fp16"
    inputs = {"lr": lr(1, 16, 16)}
    np.testing.assert_allclose(run_engine(engine, inputs), run_ort(reference, inputs), atol=3e-2)


def test_qdq_engine_is_strongly_typed(graphs: dict[str, Path], tmp_path: Path, trt_version: str) -> None:
    engine = tmp_path / "int8.engine"
    sidecar = build(graphs["qdq"], engine, "--int8")
    assert sidecar["strongly_typed"] and sidecar["precision"] == "int8"
    inputs = {"lr": lr(1, 16, 16)}
    np.testing.assert_allclose(run_engine(engine, inputs), run_ort(graphs["qdq"], inputs), atol=5e-2)


def test_mismatched_sidecar_refuses_to_load(graphs: dict[str, Path], tmp_path: Path, trt_version: str) -> None:
    engine = tmp_path / "full.engine"
    build(graphs["lightbsr_full"], engine)
    data = json.loads(sidecar_path(engine).read_text())
    sidecar_path(engine).write_text(json.dumps({**data, "compute_capability": "5.0", "gpu_name": "Old GPU"}))
    with pytest.raises(EngineMismatchError, match="built for Old GPU"):
        load_engine(engine)
    sidecar_path(engine).write_text(json.dumps({**data, "tensorrt_version": "10.0.0.1"}))
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.0\.0\.1"):
        load_engine(engine)


def test_version_compatible_engine_loads(graphs: dict[str, Path], tmp_path: Path, trt_version: str) -> None:
    engine = tmp_path / "vc.engine"
    assert build(graphs["lightbsr_full"], engine, "--version-compatible")["version_compatible"]
    inputs = {"lr": lr(1, 8, 8)}
    np.testing.assert_allclose(run_engine(engine, inputs), run_ort(graphs["lightbsr_full"], inputs), atol=5e-3)


def test_engine_cache_reuses_the_built_engine(graphs: dict[str, Path], tmp_path: Path, trt_version: str) -> None:
    settings = BuildSettings(profiles=(ShapeRange((1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 16, 16)),))
    gpu = detect_gpu()
    assert gpu is not None
    cache = EngineCache(tmp_path / "cache")
    first = cache.get_or_build(
        graphs["kdsr_restorer"], settings, tensorrt_version=trt_version, gpu=gpu, build=build_engine
    )
    built_at = first.stat().st_mtime_ns
    again = cache.get_or_build(
        graphs["kdsr_restorer"], settings, tensorrt_version=trt_version, gpu=gpu, build=build_engine
    )
    assert again == first and again.stat().st_mtime_ns == built_at
