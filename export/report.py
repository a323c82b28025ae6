"""Measure an export end to end: export, FP16, INT8, ONNX Runtime latency and accuracy vs FP32.

A measurement script, not a test: it prints and saves figures (``report.json`` in ``--out``)::

    python -m lightbsr.export.report CKPT --out DIR --benchmark BENCH_DIR --calib HR_DIR \\
        [--datasets Set5 Set14] [--sigmas 1.2 2.4 3.6]

1. ``export_onnx(CKPT, DIR/model.onnx, split=True)``: export time, file sizes, nodes before and
   after onnxslim;
2. ``quantize_fp16`` and ``quantize_int8`` (calibration on ``--calib``, which should not be the
   benchmark images);
3. ONNX Runtime (CPU) latency of each precision on one 1×3×64×64 LR input (median of 5 runs after
   a warm-up; informational, the machine may be shared);
4. :func:`lightbsr.export.compare` of FP16 and INT8 against FP32 on every dataset folder of
   ``--benchmark`` and every σ (LR synthesised from HR with the papers' protocol).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lightbsr.files import atomic_output

from .onnx_export import export_onnx
from .parity import compare, load_runner
from .precision import quantize_fp16, quantize_int8


def latency(path: Path, size: int = 64, repeats: int = 5) -> float:
    """Median ONNX Runtime (CPU) seconds for one 1×3×size×size input, after one warm-up run."""
    from lightbsr.runtime import load_backend

    backend = load_backend("onnxruntime", path, device="cpu", split=False)
    lr = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    backend.forward(lr)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.forward(lr)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    checkpoint: Path,
    out: Path,
    benchmark: Path,
    calib: Path,
    datasets: list[str],
    sigmas: list[float],
    calib_count: int = 32,
    calib_size: int = 64,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"checkpoint": str(checkpoint)}
    start = time.perf_counter()
    exported = export_onnx(checkpoint, out / "model.onnx", split=True, progress=True)
    report["export"] = {**exported.to_dict(), "total_seconds": round(time.perf_counter() - start, 2)}
    print(json.dumps(report["export"], indent=1), flush=True)
    fp16 = quantize_fp16(exported.path, out / "model.fp16.onnx", progress=True)
    report["fp16"] = fp16.to_dict()
    int8 = quantize_int8(
        exported.path, out / "model.int8.onnx", calib, count=calib_count, size=calib_size, progress=True
    )
    report["int8"] = int8.to_dict()
    print(json.dumps({"fp16_s": fp16.seconds, "int8_s": int8.seconds}), flush=True)
    models = {"fp32": exported.path, "fp16": fp16.path, "int8": int8.path}
    report["latency_64x64_s"] = {name: round(latency(path), 4) for name, path in models.items()}
    report["bytes"] = {name: path.stat().st_size for name, path in models.items()}
    print(json.dumps({"latency_64x64_s": report["latency_64x64_s"], "bytes": report["bytes"]}), flush=True)
    reference = load_runner(exported.path)
    report["accuracy"] = {}
    for precision in ("int8", "fp16"):
        runner = load_runner(models[precision])
        for dataset in datasets:
            for sigma in sigmas:
                result = compare(reference, runner, benchmark / dataset, degrade_sigma=sigma, progress=True)
                key = f"{precision}/{dataset}/sigma{sigma}"
                report["accuracy"][key] = result.to_dict()
                print(key, json.dumps(result.to_dict()["overall"]), flush=True)
    with atomic_output(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightbsr.export.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--benchmark", type=Path, required=True, help="folder holding the dataset folders")
    parser.add_argument("--datasets", nargs="+", default=["Set5", "Set14"])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[1.2, 2.4, 3.6])
    parser.add_argument("--calib", type=Path, required=True, help="HR images for INT8 calibration")
    parser.add_argument("--calib-count", type=int, default=32)
    parser.add_argument("--calib-size", type=int, default=64)
    args = parser.parse_args(argv)
    measure(
        args.checkpoint,
        args.out,
        args.benchmark,
        args.calib,
        args.datasets,
        args.sigmas,
        args.calib_count,
        args.calib_size,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
