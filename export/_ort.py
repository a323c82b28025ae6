"""ONNX Runtime sessions with one-line errors (CPU unless told otherwise)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from lightbsr.errors import BackendUnavailableError, ModelFileError


def ort_session(
    model: str | os.PathLike[str] | onnx.ModelProto,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    *,
    optimize: bool = True,
) -> object:
    """An ``onnxruntime.InferenceSession`` for a file or an in-memory model (``optimize=False``: no graph
    optimisation, for many short-lived sessions)."""
    try:
        import onnxruntime as ort
    except ImportError as err:  # pragma: no cover - onnxruntime is a dependency
        raise BackendUnavailableError("onnxruntime is not installed") from err
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(Path(model))
    name = "in-memory model" if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=list(providers))
    except Exception as err:  # ORT raises Fail / NotImplemented / InvalidGraph
        raise ModelFileError(f"{name}: ONNX Runtime cannot load it ({_first_line(err)})") from err


def run(session: object, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
    """Run a session on float32 feeds; returns its outputs as float32 arrays."""
    try:
        result = session.run(list(outputs) if outputs is not None else None, dict(feeds))  # type: ignore[attr-defined]
    except Exception as err:
        raise ModelFileError(f"ONNX Runtime failed to run the model ({_first_line(err)})") from err
    return [np.asarray(value, dtype=np.float32) for value in result]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
