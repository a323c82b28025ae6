"""CPU performance reports: roofline, GFLOP/s per target, ORT profile, tiling throughput, an upscale under load."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from export_fixtures import Exported

from lightbsr.benchmarks import contention
from lightbsr.benchmarks.latency import Row, add_roofline
from lightbsr.benchmarks.report import machine_title
from lightbsr.benchmarks.roofline import measure_peaks, peak_of
from lightbsr.cli import main
from lightbsr.errors import ConfigError

IMAGE = Path(__file__).parent / "data" / "images" / "baby_crop.png"


def test_roofline_times_fp32_and_int8_gemms() -> None:
    peaks = [p.to_dict() for p in measure_peaks(1, size=64, repeats=1)]
    assert [p["name"] for p in peaks] == [
        "torch.mm fp32",
        "onnxruntime MatMul fp32",
        "onnxruntime MatMulInteger u8s8",
        "onnxruntime MatMulInteger s8s8",
    ]
    assert all(p["gops"] > 0 and p["threads"] == 1 and p["size"] == 64 for p in peaks)
    assert peak_of(peaks, "fp32") == max(p["gops"] for p in peaks[:2])
    assert peak_of(peaks, "int8") == peaks[2]["gops"]


def test_each_row_gets_its_gflops_and_share_of_the_peak_of_its_precision() -> None:
    peaks = [
        {"name": "a fp32", "precision": "fp32", "gops": 100.0},
        {"name": "b fp32", "precision": "fp32", "gops": 50.0},
        {"name": "x u8s8", "precision": "int8", "gops": 200.0},
        {"name": "x s8s8", "precision": "int8", "gops": 20.0},
    ]
    fp32 = Row("ort-cpu-fp32", "onnxruntime", "fp32", "cpu", 8, 8, 2, median_ms=100.0)
    int8 = Row("ort-cpu-int8-cpu", "onnxruntime", "int8", "cpu", 8, 8, 1, median_ms=50.0)
    skipped = Row("ort-cuda-fp32", "onnxruntime", "fp32", "cuda", 8, 8, 1, status="skipped")
    add_roofline([fp32, int8, skipped], {(8, 8): 3 * 10**9}, peaks)
    assert (fp32.gflop_per_s, fp32.pct_of_peak, fp32.pct_of_fp32_peak) == (60.0, 60.0, 60.0)  # 2 × 3 GFLOP / 0.1 s
    assert (int8.gflop_per_s, int8.pct_of_peak, int8.pct_of_fp32_peak) == (60.0, 30.0, 60.0)
    assert skipped.gflop_per_s is None and skipped.pct_of_peak is None


def test_the_title_names_the_cpu_and_its_flags() -> None:
    env = {"cpu": "AMD EPYC", "cpu_isa": ["avx2", "fma"], "usable_cpus": 2}
    assert machine_title(env) == "AMD EPYC, 2 CPUs: AVX2 (no AVX-512, VNNI, BF16, AMX)"
    env["cpu_isa"] = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"]
    assert machine_title(env) == "AMD EPYC, 2 CPUs: AVX2 AVX-512 VNNI BF16 AMX"
    assert machine_title({"cpu": "Core", "cpu_isa": ["avx2", "avx_vnni"], "cpu_count": 8}).startswith(
        "Core, 8 CPUs: AVX2 AVX-VNNI (no AVX-512, BF16, AMX)"
    )


def test_one_bench_run_has_roofline_profile_and_tiling(exported: dict[str, Exported], tmp_path: Path) -> None:
    item = exported["lightbsr_student_x4"]  # a checkpoint and its FP32 ONNX with split graphs
    out = tmp_path / "report.json"
    argv = ["bench", str(item.checkpoint), "--latency", "--onnx", str(item.onnx), "--image", str(IMAGE)]
    argv += [
        "--targets",
        "torch-fp32",
        "torch-channels-last-fp32",
        "ort-cpu",
        "ort-cpu-extended",
        "openvino-cpu",
        "openvino-cpu-bf16",
    ]
    argv += ["--size", "8", "--threads", "1", "--warmup", "0", "--repeats", "1", "--no-progress", "--gemm-size", "64"]
    argv += ["--ort-profile", "--tiling", "--tiling-size", "20", "--tiles", "12", "--tiling-repeats", "1"]
    text, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(err):
        assert main([*argv, "--json", str(out)]) == 0, err.getvalue()
    document = json.loads(out.read_text())
    assert document["roofline"]["threads"] == 1 and len(document["roofline"]["peaks"]) == 4
    rows = {r["target"]: r for r in document["latency"]["rows"]}
    for name in ("torch-fp32", "torch-channels-last-fp32", "ort-cpu-fp32", "ort-cpu-extended-fp32"):
        assert rows[name]["status"] == "ok" and rows[name]["gflop_per_s"] > 0 and rows[name]["pct_of_peak"] > 0
    assert rows["torch-channels-last-fp32"]["psnr_vs_reference_db"] == "inf" or (
        rows["torch-channels-last-fp32"]["psnr_vs_reference_db"] > 80
    )
    for name in ("openvino-cpu-fp32", "openvino-cpu-bf16"):  # ok where OpenVINO (and for BF16 the CPU) has it
        assert rows[name]["status"] in ("ok", "skipped"), rows[name]
    if rows["openvino-cpu-fp32"]["status"] == "ok":  # pinned to FP32: as close to the reference as ONNX Runtime
        assert rows["openvino-cpu-fp32"]["psnr_vs_reference_db"] == "inf" or (
            rows["openvino-cpu-fp32"]["psnr_vs_reference_db"] > 80
        )
    (profile,) = document["ort_profile"]
    assert profile["height"] == 8 and 99 <= sum(o["share_pct"] for o in profile["ops"]) <= 101
    assert any(o["op"] in ("Conv", "MatMul") for o in profile["ops"])
    tiling = {(r["backend"], r["tiling"]): r for r in document["tiling"]["rows"]}
    assert set(tiling) == {("torch", "none"), ("torch", "exact"), ("torch", "blend"), ("onnxruntime", "none"),
                           ("onnxruntime", "blend")}  # fmt: skip
    assert all(not r["error"] and r["output_mp_per_s"] > 0 for r in tiling.values())
    assert tiling["torch", "exact"]["pct_of_untiled"] > 0 and tiling["torch", "exact"]["tiles"] == 4
    blend = tiling["torch", "blend"]  # overlap 6: three tiles of 11 per axis, not three of 12
    assert (blend["tiles"], blend["tile_used"], blend["work"], blend["work_plain_plan"]) == (9, 11, 2.723, 3.24)
    assert tiling["onnxruntime", "blend"]["work"] <= tiling["onnxruntime", "blend"]["work_plain_plan"]
    md = text.getvalue()
    for heading in ("Roofline", "Where ONNX Runtime's time goes", "Tiling throughput (20×20 LR)", "% of peak"):
        assert heading in md
    assert md.splitlines()[0].startswith(f"# lightbsr bench: {item.checkpoint} on ")


def test_extras_need_a_checkpoint() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["bench", "lightbsr_student_x4", "--latency", "--tiling", "--size", "8"]) == 2
    assert "go with a checkpoint MODEL" in err.getvalue()


def test_an_upscale_beside_a_busy_process(exported: dict[str, Exported]) -> None:
    item = exported["lightbsr_student_x4"]
    cases = [contention.Case("torch", 1, "passive"), contention.Case("onnxruntime", 1, "sleep")]
    models = {"torch": str(item.checkpoint), "onnxruntime": str(item.onnx)}
    rows = contention.measure(
        cases, models, str(IMAGE), size=8, load_threads=1, repeats=1, max_seconds=1.0, progress=False
    )
    for row in rows:
        assert not row.error, row.error
        assert row.idle_ms and row.loaded_ms and row.slowdown == pytest.approx(row.loaded_ms / row.idle_ms, rel=0.05)
    with pytest.raises(ConfigError, match="unknown torch wait policy"):
        contention.measure([contention.Case("torch", 1, "lazy")], models, str(IMAGE), load_threads=1)
    missing = contention.measure([contention.Case("onnxruntime", 1, "spin")], {}, str(IMAGE), load_threads=1)
    assert missing[0].error == "no onnxruntime model given"
