"""The tensorrt backend on real TensorRT and a GPU: engines built from a tiny export, compared with ONNX Runtime.

Skipped, with the reason, unless the full TensorRT Python package and a CUDA GPU are
present (and torch or cuda-python for device buffers). Not run where it was written: no
GPU there (see docs/tensorrt.md, "What was verified where").
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lightbsr import contract
from lightbsr.benchmarks.consistency import psnr
from lightbsr.cuda import import_cudart
from lightbsr.runtime import Upscaler, device_buffers
from lightbsr.runtime import tensorrt_backend as trtb
from lightbsr.tensorrt import loader
from lightbsr.tensorrt.engine import detect_gpu, sidecar_path

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt]

ARCH = "lightbsr_student_x4"
SIZE = (40, 52)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    found = loader.import_tensorrt()
    if found is None or found.lean or detect_gpu() is None:
        pytest.skip("needs TensorRT and a CUDA GPU")
    if device_buffers._cuda_torch() is None and import_cudart() is None:
        pytest.skip("needs torch with CUDA or cuda-python for device buffers")
    torch = pytest.importorskip("torch", reason="needs torch to export the test model")
    torch.set_num_threads(1)
    from runtime_models import export_onnx, reference_student

    graphs = (contract.GRAPH_FULL, contract.GRAPH_ESTIMATOR, contract.GRAPH_RESTORER)
    folder = tmp_path_factory.mktemp("trt")
    return export_onnx(reference_student(ARCH), folder / "student.onnx", arch=ARCH, graphs=graphs)


@pytest.fixture(scope="module")
def lr() -> np.ndarray:
    return np.random.default_rng(7).random((3, *SIZE)).astype(np.float32)


def test_engines_from_onnx_match_onnxruntime_and_are_cached(exported: Path, lr: np.ndarray, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    whole_ort = Upscaler(exported, backend="onnxruntime", tile=0).upscale_lr(lr)
    shapes = trtb.engine_shapes([SIZE], tile=0)
    whole = Upscaler(exported, backend="tensorrt", tile=0, engine_cache=cache, engine_shapes=shapes)
    assert whole.backend.can_split and len(whole.backend.built) == 2
    assert psnr(whole.upscale_lr(lr), whole_ort) >= 60

    tiled_ort = Upscaler(exported, backend="onnxruntime", tile=16, tile_overlap=4, tile_batch=3).upscale_lr(lr)
    shapes = trtb.engine_shapes([SIZE], tile=16, tile_batch=2)
    tiled = Upscaler(
        exported, backend="tensorrt", tile=16, tile_overlap=4, tile_batch=3, engine_cache=cache, engine_shapes=shapes
    )
    assert psnr(tiled.upscale_lr(lr), tiled_ort) >= 60  # shared IDR, batches of 3 run as 2 + 1
    again = Upscaler(exported, backend="tensorrt", engine_cache=cache, engine_shapes=shapes)
    assert again.backend.built == []  # reused from the cache


@pytest.mark.parametrize("buffers", ["torch", "cuda-python"])
def test_prebuilt_engines_on_each_kind_of_buffers(exported: Path, lr: np.ndarray, tmp_path: Path, buffers: str) -> None:
    if buffers == "torch" and device_buffers._cuda_torch() is None:
        pytest.skip("needs torch with CUDA")
    if buffers == "cuda-python" and import_cudart() is None:
        pytest.skip("needs cuda-python")
    cache = tmp_path / "cache"
    shapes = trtb.engine_shapes([SIZE], tile=32)
    built = Upscaler(exported, backend="tensorrt", engine_cache=cache, engine_shapes=shapes).backend
    target = tmp_path / "engines" / "student.engine"  # the names `lightbsr build` would give them
    target.parent.mkdir()
    names = dict(zip((contract.GRAPH_ESTIMATOR, contract.GRAPH_RESTORER), contract.split_paths(target), strict=True))
    for engine in built.engines:
        name = names[engine.graph]
        shutil.copy(engine.path, name)
        shutil.copy(sidecar_path(engine.path), sidecar_path(name))
    reference = Upscaler(exported, backend="onnxruntime", tile=32, tile_overlap=8).upscale_lr(lr)
    prebuilt = Upscaler(target, tile=32, tile_overlap=8, buffers=buffers)
    assert prebuilt.backend.describe()["buffers"] == buffers
    assert psnr(prebuilt.upscale_lr(lr), reference) >= 60
