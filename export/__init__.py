"""Export stage: ONNX export, precision conversion and parity checks (``lightbsr.export``).

Public API (imported lazily, so that ``lightbsr --help`` stays torch-free):

* :func:`export_onnx` (checkpoint or model → ONNX, split graphs) → :class:`ExportResult`
* :func:`quantize_fp16`, :func:`quantize_int8` (→ :class:`QuantizeResult`), :func:`calibration_crops`
* :func:`compare` (two models on real images) → :class:`CompareResult`
* :func:`read_onnx_metadata`, :func:`load_onnx`
* :func:`write_triton_repository` (ONNX → Triton model repository) → :class:`TritonRepository`
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "export_onnx": "onnx_export",
    "ExportResult": "onnx_export",
    "GraphFile": "onnx_export",
    "DEFAULT_OPSET": "onnx_export",
    "quantize_fp16": "precision",
    "quantize_int8": "precision",
    "calibration_crops": "precision",
    "QuantizeResult": "precision",
    "compare": "parity",
    "CompareResult": "parity",
    "read_onnx_metadata": "metadata",
    "load_onnx": "metadata",
    "write_triton_repository": "triton",
    "TritonRepository": "triton",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
