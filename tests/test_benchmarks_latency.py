"""Latency measurement: timing, sizes, real-image inputs, the target grid, skipped and failing targets."""

from __future__ import annotations

import importlib.machinery
import math
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from lightbsr.benchmarks import latency as lat
from lightbsr.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from export_fixtures import single_torch_thread, tiny_lightbsr
from runtime_models import export_onnx, set_metadata

IMAGE = Path(__file__).parent / "data" / "images" / "baby_crop.png"


def test_time_runs_counts_and_stops_early() -> None:
    calls: list[int] = []
    timing = lat.time_runs(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7 and len(timing.times) == 5
    assert timing.percentile(0) <= timing.median <= timing.percentile(90) <= timing.percentile(99)
    slow = lat.time_runs(lambda: time.sleep(0.01), warmup=0, repeats=50, min_repeats=2, max_seconds=0.005)
    assert len(slow.times) == 2
    assert all(t >= 0.009 for t in slow.times)
    with pytest.raises(ConfigError):
        lat.time_runs(lambda: None, repeats=0)


def test_parse_size() -> None:
    assert lat.parse_size("64") == (64, 64)
    assert lat.parse_size("48x80") == (48, 80)
    assert lat.parse_size("720p") == (720, 1280)
    for bad in ("0", "a", "1x2x3", "-4"):
        with pytest.raises(ConfigError):
            lat.parse_size(bad)


@pytest.mark.parametrize(("height", "width"), [(8, 8), (12, 40), (200, 300)])
def test_image_crop_is_a_real_image_at_the_size(height: int, width: int) -> None:
    crop = lat.image_crop(IMAGE, height, width)
    assert crop.shape == (1, 3, height, width) and crop.dtype == np.float32
    assert 0.0 <= crop.min() < crop.max() <= 1.0
    assert crop.std() > 0.01  # image content, not a flat field


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = tiny_lightbsr()
    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    with single_torch_thread():
        export_onnx(model, path, arch="lightbsr_student_x4", graphs=("full",))
    return model, path


def _slow_target(model: torch.nn.Module, seconds: float) -> lat.Target:
    def prepare() -> lat.Runner:
        def run(lr: np.ndarray) -> np.ndarray:
            time.sleep(seconds)
            with torch.no_grad():
                return model(torch.from_numpy(lr)).numpy()

        return run

    return lat.Target("slow", "test", "fp32", "cpu", prepare=prepare)


def _broken_target() -> lat.Target:
    def prepare() -> lat.Runner:
        def run(lr: np.ndarray) -> np.ndarray:
            raise RuntimeError("kernel exploded\nsecond line")

        return run

    return lat.Target("broken", "test", "fp32", "cpu", prepare=prepare)


def _dishonest_target(name: str, output: Callable[[np.ndarray], np.ndarray]) -> lat.Target:
    def prepare() -> lat.Runner:
        return output

    return lat.Target(name, "test", "fp32", "cpu", prepare=prepare)


def test_outputs_of_the_wrong_size_or_not_finite_fail_their_row(tiny: tuple[torch.nn.Module, Path]) -> None:
    model, _ = tiny
    with single_torch_thread():
        targets = lat.torch_targets(model, "cpu", ["torch-fp32"])
        targets += [
            _dishonest_target("nan", lambda lr: np.full((*lr.shape[:2], 4 * lr.shape[2], 4 * lr.shape[3]), np.nan)),
            _dishonest_target("x1", lambda lr: lr.copy()),
        ]
        rows = lat.measure(targets, [(8, 8)], [1], IMAGE, warmup=0, repeats=1, progress=False)
    by = {r.target: r for r in rows}
    assert by["torch-fp32"].status == "ok"
    assert by["nan"].status == "failed" and "NaN or infinite" in by["nan"].reason
    assert by["x1"].status == "failed" and "for a 1×3×8×8 input" in by["x1"].reason


def test_measure_grid(tiny: tuple[torch.nn.Module, Path]) -> None:
    model, onnx_path = tiny
    with single_torch_thread():
        targets = lat.torch_targets(model, "cpu", ["torch-fp32", "torch-fp16", "torch-compile-fp32"])
        targets += lat.onnx_targets([onnx_path], "cpu", ["ort-cpu", "ort-cuda"], threads=1)
        targets += [_slow_target(model, 0.05), _broken_target()]
        rows = lat.measure(
            targets, [(8, 8), (8, 12)], [1, 2], IMAGE, warmup=1, repeats=3, max_seconds=0.02, progress=False
        )
    by = {(r.target, r.width, r.batch): r for r in rows}
    assert len(rows) == len(targets) * 4
    ref = by[("torch-fp32", 8, 1)]
    assert ref.status == "ok" and ref.speedup == 1.0 and ref.psnr_vs_reference_db == "inf"
    assert ref.runs >= 1 and ref.median_ms > 0 and ref.p90_ms <= ref.p99_ms
    assert ref.output_mp_per_s == pytest.approx(8 * 8 * 16 / 1e6 / (ref.median_ms / 1e3), rel=1e-2)
    assert ref.peak_memory_mb and ref.peak_memory_mb > 0 and "RSS" in ref.memory_method
    ort = by[("ort-cpu-fp32", 8, 1)]
    assert ort.status == "ok" and ort.precision == "fp32"
    assert isinstance(ort.psnr_vs_reference_db, float) and ort.psnr_vs_reference_db > 80  # same weights
    assert ort.speedup == pytest.approx(ref.median_ms / ort.median_ms, rel=1e-2)
    assert by[("ort-cpu-fp32", 8, 2)].psnr_vs_reference_db is None  # accuracy at batch 1 only
    for name in ("torch-fp16", "torch-compile-fp32"):  # CPU defaults: skipped, with the reason
        assert by[(name, 8, 1)].status == "skipped" and by[(name, 8, 1)].reason
    cuda = by[("ort-cuda-fp32", 8, 1)]
    if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers():
        assert cuda.status == "skipped" and "CUDAExecutionProvider" in cuda.reason
    assert by[("broken", 8, 1)].status == "failed" and by[("broken", 8, 1)].reason == "kernel exploded"
    # slower than max_seconds at 8×8 batch 1: measured there, skipped at larger inputs
    assert by[("slow", 8, 1)].status == "ok" and by[("slow", 8, 1)].median_ms >= 50
    assert by[("slow", 12, 1)].status == "skipped" and "max_seconds" in by[("slow", 12, 1)].reason
    assert all(by[("torch-fp32", w, b)].status == "ok" for w in (8, 12) for b in (1, 2))


@pytest.mark.parametrize("target", ["torch-fp16", "torch-bf16"])
def test_forced_cpu_half_precision_runs_and_is_measured_against_fp32(
    tiny: tuple[torch.nn.Module, Path], target: str
) -> None:
    """CPU defaults skip fp16/bf16 (slow there); forced, each runs under autocast and is compared with fp32."""
    model, _ = tiny
    with single_torch_thread():
        targets = lat.torch_targets(model, "cpu", ["torch-fp32", target], force=[target])
        rows = lat.measure(targets, [(8, 8)], [1], IMAGE, warmup=0, repeats=1, progress=False)
    row = rows[1]
    assert (row.target, row.status, row.reason) == (target, "ok", "")
    # autocast rounds: close to fp32 but not equal (bf16 keeps 8 mantissa bits, fp16 11)
    assert isinstance(row.psnr_vs_reference_db, float) and 30 < row.psnr_vs_reference_db < math.inf


def test_reference_must_come_first(tiny: tuple[torch.nn.Module, Path]) -> None:
    _, onnx_path = tiny
    with pytest.raises(ConfigError, match="reference"):
        lat.measure(lat.onnx_targets([onnx_path], "cpu", ["ort-cpu"], 1), [(8, 8)], [1], IMAGE, progress=False)


def test_environment_names_the_machine() -> None:
    env = lat.environment(2, "cpu")
    assert env["threads"] == 2 and env["cpu"] and env["torch"] == torch.__version__
    assert "onnxruntime" in env


def test_environment_ignores_a_tensorrt_without_bindings(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    # what tensorrt-stubs alone (CI) leaves: a `tensorrt` that imports but is empty
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    assert "tensorrt" not in lat.environment(1, "cpu")
    bindings = types.ModuleType("tensorrt")
    bindings.__version__ = "10.13.0"  # type: ignore[attr-defined]
    bindings.Runtime = object  # type: ignore[attr-defined]  # what the one import probe looks for
    monkeypatch.setitem(sys.modules, "tensorrt", bindings)
    assert lat.environment(1, "cpu")["tensorrt"] == "10.13.0"


def test_two_files_of_one_precision_get_rows_that_name_the_file(
    tiny: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    _, onnx_path = tiny
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(Path(onnx_path).read_bytes())
    names = [t.name for t in lat.onnx_targets([onnx_path, copy], "cpu", ["ort-cpu"], threads=1)]
    assert names == [f"ort-cpu-fp32 ({Path(onnx_path).name})", "ort-cpu-fp32 (copy.onnx)"]
    assert [t.name for t in lat.onnx_targets([onnx_path], "cpu", ["ort-cpu"], threads=1)] == ["ort-cpu-fp32"]


def test_openvino_targets_compute_in_the_precision_their_names_say(
    tiny: tuple[torch.nn.Module, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """openvino-cpu is FP32 (or an INT8 file's integer kernels), openvino-cpu-bf16 BF16, skipped without BF16."""
    import lightbsr.runtime
    from lightbsr import contract

    _, onnx_path = tiny
    int8 = tmp_path / "int8.onnx"
    int8.write_bytes(Path(onnx_path).read_bytes())
    set_metadata(int8, {contract.META_PRECISION: "int8", contract.META_INT8_TARGET: "cpu"})
    stand_in = types.ModuleType("openvino")  # installed or not, find_spec finds it
    stand_in.__spec__ = importlib.machinery.ModuleSpec("openvino", None)
    monkeypatch.setitem(sys.modules, "openvino", stand_in)
    monkeypatch.setattr(lat, "cpu_isa", lambda: ["avx2", "avx512f", "amx_bf16"])
    opened: list[tuple[object, ...]] = []

    def load_backend(name: str, path: Path, **options: object) -> types.SimpleNamespace:
        opened.append((name, Path(path).name, options["precision"], options["split"], options["threads"]))
        return types.SimpleNamespace(forward=lambda lr: lr)

    monkeypatch.setattr(lightbsr.runtime, "load_backend", load_backend)
    kinds = ["openvino-cpu", "openvino-cpu-bf16"]
    targets = {t.name: t for t in lat.onnx_targets([onnx_path, int8], "cpu", kinds, threads=2)}
    assert {n: t.precision for n, t in targets.items()} == {
        "openvino-cpu-fp32": "fp32",
        "openvino-cpu-bf16": "bf16",
        "openvino-cpu-int8-cpu": "int8",
        "openvino-cpu-bf16-int8-cpu": "int8",  # the float layers of the INT8 file in BF16
    }
    for name in sorted(targets):
        assert not targets[name].skip_reason and targets[name].backend == "openvino"
        targets[name].prepare()  # type: ignore[misc]
    tiny_name = Path(onnx_path).name
    assert opened == [
        ("openvino", tiny_name, "bf16", False, 2),
        ("openvino", "int8.onnx", "bf16", False, 2),
        ("openvino", tiny_name, None, False, 2),  # None: the backend pins FP32
        ("openvino", "int8.onnx", None, False, 2),
    ]
    monkeypatch.setattr(lat, "cpu_isa", lambda: ["avx2", "avx512f", "avx512_vnni"])
    (bf16,) = lat.onnx_targets([onnx_path], "cpu", ["openvino-cpu-bf16"], threads=2)
    assert bf16.skip_reason == "this CPU has no BF16 instructions (OpenVINO would compute in FP32)"
