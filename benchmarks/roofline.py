"""The roofline's ceiling: the machine's achievable GEMM throughput, measured in the same run as the model.

A model's GFLOP/s means little without what the machine can do. :func:`measure_peaks` times
large matrix products with the thread count of the run:

* FP32: ``torch.mm`` (oneDNN / MKL) and ONNX Runtime's ``MatMul`` (MLAS); the FP32 peak is the
  faster of the two;
* INT8: ONNX Runtime's ``MatMulInteger`` with uint8 × int8 operands (U8S8: the kernels the
  ``--target cpu`` INT8 graphs run; ``vpdpbusd`` on CPUs with VNNI, ``vpmaddubsw`` on AVX2) and
  with int8 × int8 (S8S8: what a ``--target tensorrt`` graph gets on the CPU). The INT8 peak is
  the U8S8 figure.

Each row of the latency table then gets its GFLOP/s (2 × the model's multiply-accumulates, from
:mod:`lightbsr.benchmarks.complexity`, over the median time) and its share of the peak of its
precision. Times are wall clock (``time.perf_counter``), best of ``repeats`` runs after one warm-up:
a ceiling, not a typical figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lightbsr.hardware import cpu_isa

__all__ = ["GemmPeak", "gemm_model", "measure_peaks", "peak_of", "vnni"]

DEFAULT_SIZE = 2048


@dataclass
class GemmPeak:
    """One GEMM measured: ``size`` × ``size`` × ``size``, ``2·size³`` operations per run."""

    name: str
    library: str
    precision: str  # fp32 | int8
    size: int
    threads: int
    best_ms: float
    gops: float  # giga-operations per second (FLOP/s for FP32, integer multiply-adds × 2 for INT8)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def vnni() -> bool:
    """Whether this CPU has 8-bit dot-product instructions (AVX-512 VNNI or AVX-VNNI)."""
    return bool({"avx512_vnni", "avx_vnni"} & set(cpu_isa()))


def gemm_model(size: int, precision: str, signed_a: bool = False) -> bytes:
    """A one-node ONNX model: ``MatMul`` (fp32) or ``MatMulInteger`` (int8; A uint8, or int8 if ``signed_a``)."""
    from onnx import TensorProto, helper

    if precision == "fp32":
        a_type = b_type = y_type = TensorProto.FLOAT
        op = "MatMul"
    else:
        a_type, b_type, y_type = (
            (TensorProto.INT8 if signed_a else TensorProto.UINT8),
            TensorProto.INT8,
            TensorProto.INT32,
        )
        op = "MatMulInteger"
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["y"])],
        "gemm",
        [
            helper.make_tensor_value_info("a", a_type, [size, size]),
            helper.make_tensor_value_info("b", b_type, [size, size]),
        ],
        [helper.make_tensor_value_info("y", y_type, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _best(run: Callable[[], Any], repeats: int) -> float:
    run()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_peaks(threads: int, size: int = DEFAULT_SIZE, repeats: int = 5) -> list[GemmPeak]:
    """Time the GEMMs of the module docstring with ``threads`` threads (torch's pool is set to it)."""
    import onnxruntime
    import torch

    from lightbsr.runtime.onnxruntime_backend import session

    operations = 2.0 * size**3
    peaks = []

    def add(name: str, library: str, precision: str, seconds: float) -> None:
        peaks.append(
            GemmPeak(
                name, library, precision, size, threads, round(seconds * 1e3, 3), round(operations / seconds / 1e9, 1)
            )
        )

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.rand(size, size), torch.rand(size, size)
        add("torch.mm fp32", f"torch {torch.__version__}", "fp32", _best(lambda: torch.mm(a, b), repeats))
    finally:
        torch.set_num_threads(previous)
    rng = np.random.default_rng(0)
    cases = (
        ("onnxruntime MatMul fp32", "fp32", False, np.float32, np.float32),
        ("onnxruntime MatMulInteger u8s8", "int8", False, np.uint8, np.int8),
        ("onnxruntime MatMulInteger s8s8", "int8", True, np.int8, np.int8),
    )
    for name, precision, signed_a, a_type, b_type in cases:
        sess = session(gemm_model(size, precision, signed_a), threads=threads, name=name)
        feeds: dict[str, np.ndarray] = {
            "a": rng.integers(0, 100, (size, size)).astype(a_type),
            "b": rng.integers(-100, 100, (size, size)).astype(b_type),
        }

        def run_gemm(s: Any = sess, f: dict[str, np.ndarray] = feeds) -> Any:
            return s.run(None, f)

        add(name, f"onnxruntime {onnxruntime.__version__}", precision, _best(run_gemm, repeats))
    return peaks


def peak_of(peaks: list[dict[str, Any]], precision: str) -> float | None:
    """The ceiling for ``precision``: the best FP32 GEMM, or the U8S8 INT8 GEMM (``None`` if not measured)."""
    if precision == "int8":
        values = [p["gops"] for p in peaks if p["precision"] == "int8" and "u8s8" in p["name"]]
    else:
        values = [p["gops"] for p in peaks if p["precision"] == "fp32"]
    return max(values) if values else None
