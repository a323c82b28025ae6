"""The files the stages hand over, and the names every stage agrees on (no torch, no onnx).

checkpoint (safetensors + config) → ONNX (metadata_props below) → engine (+ JSON sidecar).

ONNX graphs
    ``full``       lr → sr
    ``estimator``  lr → IDR   (LightBSR: idr_channel (N,48), idr_spatial (N,8,H,W); KDSR: idr (N,64))
    ``restorer``   lr, IDR → sr
All tensors are float32 NCHW (or the precision the graph was converted to), ``lr``
in [0, 1], ``sr`` unclamped; batch, height and width are dynamic. The split
graphs of ``model.onnx`` are ``model.estimator.onnx`` and ``model.restorer.onnx``.
"""

from __future__ import annotations

import os
from pathlib import Path

INPUT_LR = "lr"
INPUT_DRP = "drp"  # LightBSR teacher: degradation reference prior (N, 15 | 18)
INPUT_HR = "hr"  # KDSR teacher: the HR image (N, 3, scale·H, scale·W)
OUTPUT_SR = "sr"
IDR_CHANNEL = "idr_channel"
IDR_SPATIAL = "idr_spatial"
IDR_VECTOR = "idr"

GRAPH_FULL = "full"
GRAPH_ESTIMATOR = "estimator"
GRAPH_RESTORER = "restorer"

# ONNX metadata_props keys (values are strings)
META_ARCH = "lightbsr.arch"
META_FAMILY = "lightbsr.family"
META_SCALE = "lightbsr.scale"
META_SETTING = "lightbsr.setting"  # "1", "2" or "" (unknown)
META_GRAPH = "lightbsr.graph"  # GRAPH_FULL | GRAPH_ESTIMATOR | GRAPH_RESTORER
META_PRECISION = "lightbsr.precision"  # "fp32" | "fp16" | "int8"
META_SOURCE_SHA256 = "lightbsr.source_sha256"  # sha256 of the checkpoint it was exported from
META_VERSION = "lightbsr.version"

# The Triton python-backend model (written by ``lightbsr export --triton`` / ``lightbsr serve``, run by
# lightbsr.runtime.triton_model): 8-bit images in and out, (N, H, W, C) with C = 1 (gray), 2 (gray + alpha),
# 3 (RGB) or 4 (RGBA); the config parameter TRITON_MODEL_PARAMETER names the model file it runs.
TRITON_IMAGE_INPUT = "image"
TRITON_IMAGE_OUTPUT = "upscaled"
TRITON_MODEL_PARAMETER = "model"


def idr_names(family: str) -> tuple[str, ...]:
    """Names of the IDR tensors between the estimator and the restorer, in order."""
    return (IDR_CHANNEL, IDR_SPATIAL) if family == "lightbsr" else (IDR_VECTOR,)


def split_paths(model_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``model.onnx`` → (``model.estimator.onnx``, ``model.restorer.onnx``)."""
    path = Path(model_path)
    return path.with_suffix(f".{GRAPH_ESTIMATOR}{path.suffix}"), path.with_suffix(f".{GRAPH_RESTORER}{path.suffix}")
