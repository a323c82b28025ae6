"""The GPU paths of the bench (CUDA events, CUDA memory, FP16/torch.compile, ONNX Runtime CUDA/TensorRT).

They skip with the reason where there is no CUDA GPU (or no onnxruntime-gpu) and run for real where there is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lightbsr.benchmarks import latency as lat

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from export_fixtures import single_torch_thread, tiny_lightbsr
from runtime_models import export_onnx

IMAGE = Path(__file__).parent / "data" / "images" / "baby_crop.png"

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to PyTorch")


@pytest.mark.gpu
@needs_cuda
def test_cuda_events_time_the_device_work() -> None:
    x = torch.randn(2048, 2048, device="cuda")
    timing = lat.time_runs(lambda: x @ x, warmup=2, repeats=5, cuda=True)
    assert len(timing.times) == 5 and all(t > 0 for t in timing.times)
    slept = lat.time_runs(lambda: torch.cuda._sleep(10_000_000), warmup=0, repeats=2, cuda=True)
    assert slept.median > 1e-3  # the kernel's time, not the launch's


@pytest.mark.gpu
@needs_cuda
def test_torch_targets_on_cuda() -> None:
    model = tiny_lightbsr()
    targets = lat.torch_targets(model, "cuda", ["torch-fp32", "torch-fp16", "torch-bf16", "torch-compile-fp16"])
    rows = lat.measure(targets, [(16, 16)], [1, 2], IMAGE, warmup=1, repeats=3, progress=False)
    by = {(r.target, r.batch): r for r in rows}
    for name in ("torch-fp32", "torch-fp16", "torch-bf16"):
        row = by[(name, 1)]
        assert row.status == "ok" and row.memory_method == "torch.cuda.max_memory_allocated"
        assert row.peak_memory_mb and row.peak_memory_mb > 0
    assert isinstance(by[("torch-fp16", 1)].psnr_vs_reference_db, float)
    assert by[("torch-fp16", 1)].psnr_vs_reference_db > 30
    compiled = by[("torch-compile-fp16", 1)]
    assert compiled.status in ("ok", "failed") and (compiled.status == "ok" or compiled.reason)


@pytest.mark.gpu
def test_ort_gpu_providers(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    providers = set(ort.get_available_providers())
    if "CUDAExecutionProvider" not in providers or not torch.cuda.is_available():
        pytest.skip("needs onnxruntime-gpu (CUDAExecutionProvider) and a CUDA GPU")
    model = tiny_lightbsr()
    path = tmp_path / "tiny.onnx"
    with single_torch_thread():
        export_onnx(model, path, arch="lightbsr_student_x4", graphs=("full",))
    targets = lat.torch_targets(model, "cuda", ["torch-fp32"])
    targets += lat.onnx_targets([path], "cuda", ["ort-cuda", "ort-trt"], threads=0)
    rows = lat.measure(targets, [(16, 16)], [1], IMAGE, warmup=1, repeats=3, progress=False)
    by = {r.target: r for r in rows}
    assert by["ort-cuda-fp32"].status == "ok" and by["ort-cuda-fp32"].psnr_vs_reference_db > 60
    trt = by["ort-trt-fp32"]
    if "TensorrtExecutionProvider" in providers:
        assert trt.status in ("ok", "failed")
    else:
        assert trt.status == "skipped" and "TensorrtExecutionProvider" in trt.reason
