"""The onnxruntime backend: agreement with torch, split graphs, contract checks, providers, running without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
import torch
from runtime_models import export_onnx, reference_student, save_reference_checkpoint, set_metadata
from torch import nn

from lightbsr import contract
from lightbsr.benchmarks.consistency import psnr
from lightbsr.errors import BackendUnavailableError, ConfigError, ModelFileError
from lightbsr.runtime import Upscaler, onnxruntime_backend

ROOT = Path(__file__).resolve().parent.parent
ARCH = "lightbsr_student_x4"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reference-weight LightBSR student as a checkpoint and as split ONNX graphs."""
    folder = tmp_path_factory.mktemp("onnx")
    checkpoint = save_reference_checkpoint(folder / "student.safetensors", ARCH)
    model = export_onnx(reference_student(ARCH), folder / "student.onnx", arch=ARCH, source_sha256="abc")
    return {"checkpoint": checkpoint, "onnx": model}


@pytest.fixture(scope="module")
def ort_upscaler(exported: dict[str, Path]) -> Upscaler:
    return Upscaler(exported["onnx"], tile=0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).random((3, 20, 24)).astype(np.float32)


def test_onnxruntime_agrees_with_torch(exported: dict[str, Path], ort_upscaler: Upscaler, image: np.ndarray) -> None:
    torch_whole = Upscaler(exported["checkpoint"], tile=0)
    ort_whole = ort_upscaler
    assert ort_whole.backend.name == "onnxruntime" and ort_whole.backend.can_split
    assert ort_whole.describe()["providers"] == ["CPUExecutionProvider"]
    assert psnr(torch_whole.upscale_lr(image), ort_whole.upscale_lr(image)) >= 60
    torch_tiled = Upscaler(torch_whole.backend, tile=16, tile_overlap=8, tile_batch=2, tiling="blend")
    ort_tiled = Upscaler(ort_whole.backend, tile=16, tile_overlap=8, tile_batch=2)
    assert psnr(torch_tiled.upscale_lr(image), ort_tiled.upscale_lr(image)) >= 60
    assert ort_tiled.last_run.tiles == 4


def test_runtime_imports_and_runs_onnx_without_torch(exported: dict[str, Path], tmp_path: Path) -> None:
    rgb = (np.random.default_rng(4).random((10, 12, 3)) * 255).astype(np.uint8)
    np.save(tmp_path / "in.npy", rgb)
    cv2.imwrite(str(tmp_path / "in.png"), rgb[:, :, ::-1])
    code = f"""
import sys
sys.modules["torch"] = None
import numpy as np
import lightbsr.imageio
from lightbsr.cli import main
from lightbsr.runtime import Upscaler
up = Upscaler({str(exported["onnx"])!r}, tile=8, tile_overlap=4)
out = up.upscale(np.load({str(tmp_path / "in.npy")!r}))
np.save({str(tmp_path / "out.npy")!r}, out)
code = main(["upscale", "-i", {str(tmp_path / "in.png")!r}, "-o", {str(tmp_path / "cli.png")!r},
             "-m", {str(exported["onnx"])!r}, "--tile", "0"])
assert code == 0 and sys.modules["torch"] is None
print(up.backend.name, up.last_run.tiles)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["onnxruntime", "4"]
    expected = Upscaler(exported["checkpoint"], tile=8, tile_overlap=4, tiling="blend").upscale(rgb)
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (40, 48, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert cv2.imread(str(tmp_path / "cli.png")).shape == (40, 48, 3)


def test_torch_backend_without_torch_is_a_clear_error(exported: dict[str, Path]) -> None:
    code = f"""
import sys
sys.modules["torch"] = None
from lightbsr.errors import BackendUnavailableError
from lightbsr.runtime import Upscaler
try:
    Upscaler({str(exported["checkpoint"])!r})
except BackendUnavailableError as err:
    print(err)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "needs the Python package 'torch'" in result.stdout


# --------------------------------------------------------------------------- small hand-made graphs


class _Full(nn.Module):
    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(torch.repeat_interleave(lr * 2, 4, dim=2), 4, dim=3)


def _export_full(path: Path, metadata: dict[str, str] | None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            _Full(),
            (torch.rand(1, 3, 4, 4),),
            str(path),
            input_names=["lr"],
            output_names=["sr"],
            dynamic_axes={"lr": {0: "n", 2: "h", 3: "w"}, "sr": {0: "n", 2: "sh", 3: "sw"}},
            opset_version=17,
            dynamo=False,
        )
    if metadata is not None:
        set_metadata(path, metadata)
    return path


def _meta(graph: str, **extra: str) -> dict[str, str]:
    return {contract.META_GRAPH: graph, contract.META_FAMILY: "lightbsr", contract.META_SCALE: "4", **extra}


def test_full_graph_alone_runs_whole_images_and_per_tile_estimates(tmp_path: Path) -> None:
    model = _export_full(tmp_path / "full.onnx", _meta(contract.GRAPH_FULL))
    lr = np.random.default_rng(5).random((3, 9, 10)).astype(np.float32)
    expected = 2 * lr.repeat(4, axis=1).repeat(4, axis=2)
    whole = Upscaler(model, tile=0)
    assert not whole.backend.can_split
    np.testing.assert_allclose(whole.upscale_lr(lr), expected, rtol=1e-6)
    per_tile = Upscaler(model, tile=4, tile_overlap=2, shared_idr=False)
    np.testing.assert_allclose(per_tile.upscale_lr(lr), expected, rtol=1e-5)
    with pytest.raises(ModelFileError, match="no split graphs"):
        Upscaler(model, tile=4, tile_overlap=2).upscale_lr(lr)


def test_split_graph_path_finds_its_pair(exported: dict[str, Path]) -> None:
    estimator, _ = contract.split_paths(exported["onnx"])
    backend = Upscaler(estimator, tile=0).backend
    assert [p.name for p in backend.paths] == ["student.estimator.onnx", "student.restorer.onnx"]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p.write_text("this is not a model"), "not a loadable ONNX model"),
        (lambda p: _export_full(p, None), "not a lightbsr graph"),
        (lambda p: _export_full(p, _meta(contract.GRAPH_RESTORER)), "not the full graph"),
        (lambda p: _export_full(p, _meta(contract.GRAPH_FULL, **{contract.META_FAMILY: "esrgan"})), "family"),
        (lambda p: _export_full(p, _meta(contract.GRAPH_FULL, **{contract.META_SCALE: "x4"})), "scale"),
    ],
)
def test_files_that_are_not_lightbsr_graphs_are_refused(tmp_path: Path, make, match: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "model.onnx"
    make(path)
    with pytest.raises(ModelFileError, match=match):
        Upscaler(path)


def test_split_graphs_with_wrong_tensors_or_from_different_models_are_refused(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    estimator, restorer = contract.split_paths(tmp_path / "m.onnx")
    shutil.copy(contract.split_paths(exported["onnx"])[0], estimator)
    _export_full(restorer, _meta(contract.GRAPH_RESTORER))  # right label, wrong tensors
    with pytest.raises(ModelFileError, match="do not match the lightbsr restorer graph"):
        Upscaler(tmp_path / "m.onnx")
    shutil.copy(contract.split_paths(exported["onnx"])[1], restorer)
    set_metadata(restorer, _meta(contract.GRAPH_RESTORER, **{contract.META_SOURCE_SHA256: "other"}))
    with pytest.raises(ModelFileError, match="not exported from the same model"):
        Upscaler(tmp_path / "m.onnx")


def test_precision_must_match_the_graph_on_cpu(exported: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="fp32 graph"):
        Upscaler(exported["onnx"], precision="fp16")
    with pytest.raises(ConfigError, match="bf16"):
        Upscaler(exported["onnx"], precision="bf16")


def test_execution_providers_follow_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    choose = onnxruntime_backend.choose_providers
    monkeypatch.setattr(onnxruntime_backend.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert choose("auto", None) == choose("cpu", None) == ["CPUExecutionProvider"]
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        choose("cuda", None)
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime_backend.ort, "get_available_providers", lambda: gpu)
    providers = choose("cuda:1", "fp16")
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == gpu
    assert providers[0][1]["device_id"] == 1 and providers[0][1]["trt_fp16_enable"] is True
    assert choose("auto", None)[1] == ("CUDAExecutionProvider", {"device_id": 0})
    assert choose("cpu", None) == ["CPUExecutionProvider"]


def test_allocation_failures_count_as_out_of_memory(ort_upscaler: Upscaler) -> None:
    backend = ort_upscaler.backend
    assert backend.is_out_of_memory(RuntimeError("[ONNXRuntimeError] : 6 : Failed to allocate memory for requested"))
    assert backend.is_out_of_memory(MemoryError())
    assert not backend.is_out_of_memory(RuntimeError("shape mismatch"))
    described = backend.describe()
    assert json.loads(json.dumps(described)) == described  # what --json prints, unchanged by a round trip
    assert (described["backend"], described["device"]) == ("onnxruntime", "cpu")


def test_consistency_figures_script_runs(exported: dict[str, Path], data_dir: Path, tmp_path: Path) -> None:
    from lightbsr.benchmarks import consistency

    out = tmp_path / "figures.json"
    args = ["--checkpoint", str(exported["checkpoint"]), "--onnx", str(exported["onnx"])]
    args += ["--dataset", str(data_dir / "images"), "--tile", "16", "--tile-overlap", "4", "--limit", "1"]
    assert consistency.main([*args, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["images"]
    assert row["tiles"] > 1 and set(row) >= set(consistency.COLUMNS)
    assert row["ort_whole"]["raw"] >= 60 and row["tiled_shared"]["clamped"] < row["ort_whole"]["clamped"]
    assert row["tiled_exact"]["raw"] >= 80
    assert "exact tiles" in consistency.format_table(result)


# --------------------------------------------------------------------------- GPU provider defects, on stand-ins


class _FallbackSession:
    """Stand-in for an ``onnxruntime.InferenceSession`` whose GPU provider failed to start: ONNX Runtime's Python
    wrapper then retries on its fallback providers *without* the provider options (device_id lost)."""

    real = onnxruntime_backend.ort.InferenceSession

    def __init__(self, source: str, sess_options: object = None, providers: list | None = None) -> None:
        self._session = self.real(source, sess_options=sess_options, providers=["CPUExecutionProvider"])
        self.requested = providers

    def get_providers(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return {"CUDAExecutionProvider": {"device_id": "0"}, "CPUExecutionProvider": {}}

    def __getattr__(self, name: str) -> object:
        return getattr(self._session, name)


def _gpu_onnxruntime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime_backend.ort, "get_available_providers", lambda: available)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_trt_provider_cache_folder_is_created_with_a_stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Stand-in providers (no GPU here): the TensorRT EP creates trt_engine_cache_path non-recursively and throws
    when its parents are missing, so the backend must create the folder first."""
    _gpu_onnxruntime(monkeypatch, tmp_path)
    providers = onnxruntime_backend.choose_providers("cuda:1", None)
    name, options = providers[0]
    assert name == "TensorrtExecutionProvider" and options["device_id"] == 1
    assert Path(options["trt_engine_cache_path"]).is_dir()


def test_provider_fallback_is_refused_or_reported_with_a_stand_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Stand-in session (no GPU here) that fell back from the TensorRT EP to CUDA on device 0, as ONNX Runtime's
    Python wrapper does when a provider cannot start."""
    from runtime_tensorrt_graphs import write_toy_model

    toy = write_toy_model(tmp_path / "toy.onnx")
    _gpu_onnxruntime(monkeypatch, tmp_path)
    monkeypatch.setattr(onnxruntime_backend.ort, "InferenceSession", _FallbackSession)
    with pytest.raises(BackendUnavailableError, match=r"cuda:1.*fell back to CUDAExecutionProvider on cuda:0"):
        onnxruntime_backend.load(toy, device="cuda:1")  # the device asked for is lost: refused
    with pytest.raises(BackendUnavailableError, match="could not start TensorrtExecutionProvider"):
        onnxruntime_backend.load(toy, providers=[("TensorrtExecutionProvider", {"device_id": 0})])  # asked for
    with pytest.warns(RuntimeWarning, match="could not start TensorrtExecutionProvider; running on CUDA"):
        backend = onnxruntime_backend.load(toy, device="cuda")  # chosen automatically: reported, not refused
    info = backend.describe()
    assert info["providers"][0] == "CUDAExecutionProvider" and info["device"] == "cuda:0"


def test_free_memory_is_of_the_backends_device_with_a_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in cuda-python runtime (no GPU here): two devices with different free memory."""
    from lightbsr import cuda

    class FakeCudart:
        current = 0
        free: ClassVar[dict[int, int]] = {0: 1 << 30, 1: 5 << 30}

        def cudaSetDevice(self, device: int) -> tuple[int]:
            FakeCudart.current = device
            return (0,)

        def cudaMemGetInfo(self) -> tuple[int, int, int]:
            return 0, self.free[self.current], 80 << 30

    monkeypatch.setattr(cuda, "import_cudart", lambda: FakeCudart())
    backend = object.__new__(onnxruntime_backend.OnnxRuntimeBackend)
    backend.device = "cuda:1"
    assert backend.free_memory() == 5 << 30
