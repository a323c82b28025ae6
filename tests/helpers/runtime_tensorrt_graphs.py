"""Tiny LightBSR-shaped ONNX graphs written with ``onnx.helper`` (no torch), for the TensorRT backend tests.

Estimator: ``lr`` → ``idr_channel`` = mean(lr over H, W) @ W (n×6), ``idr_spatial`` = lr / 2.
Restorer: (``lr``, ``idr_channel``, ``idr_spatial``) → nearest ×4 of (lr + idr_spatial) + idr_channel @ V.
Full: the two in one graph. Every op is per pixel but the global mean, so with a shared
(whole-image) estimate a tiled upscale equals the whole-image one: any difference is the
runtime's doing (buffers, shapes, batching, dtype conversion, tiling).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lightbsr import contract

SCALE = 4
IDR_WIDTH = 6
_W = np.linspace(-1, 1, 3 * IDR_WIDTH, dtype=np.float32).reshape(3, IDR_WIDTH)
_V = np.linspace(0.5, -0.5, IDR_WIDTH * 3, dtype=np.float32).reshape(IDR_WIDTH, 3)


def _pixels(name: str, channels: int = 3, scale: int = 1) -> onnx.ValueInfoProto:
    h, w = ("h", "w") if scale == 1 else ("sh", "sw")
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", channels, h, w])


def _estimator_nodes() -> list[onnx.NodeProto]:
    return [
        helper.make_node("ReduceMean", [contract.INPUT_LR], ["mean"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["mean", "W"], [contract.IDR_CHANNEL]),
        helper.make_node("Mul", [contract.INPUT_LR, "half"], [contract.IDR_SPATIAL]),
    ]


def _restorer_nodes() -> list[onnx.NodeProto]:
    return [
        helper.make_node("Add", [contract.INPUT_LR, contract.IDR_SPATIAL], ["x"]),
        helper.make_node("Resize", ["x", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("MatMul", [contract.IDR_CHANNEL, "V"], ["bias"]),
        helper.make_node("Unsqueeze", ["bias", "axes"], ["bias4"]),
        helper.make_node("Add", ["up", "bias4"], [contract.OUTPUT_SR]),
    ]


def _constants(graph: str) -> list[onnx.TensorProto]:
    estimator = [numpy_helper.from_array(_W, "W"), numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    restorer = [
        numpy_helper.from_array(_V, "V"),
        numpy_helper.from_array(np.array([1, 1, SCALE, SCALE], np.float32), "scales"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    return {"estimator": estimator, "restorer": restorer, "full": estimator + restorer}[graph]


def _save(path: Path, graph: str, nodes: list, inputs: list, outputs: list, family: str = "lightbsr") -> Path:
    model = helper.make_model(
        helper.make_graph(nodes, f"toy_{graph}", inputs, outputs, _constants(graph)),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8  # readable by older onnxruntime/TensorRT parsers too
    onnx.checker.check_model(model)
    helper.set_model_props(
        model,
        {
            contract.META_ARCH: "lightbsr_student_x4",
            contract.META_FAMILY: family,
            contract.META_SCALE: str(SCALE),
            contract.META_GRAPH: graph,
            contract.META_PRECISION: "fp32",
            contract.META_SOURCE_SHA256: "toy",
            contract.META_VERSION: "test",
        },
    )
    onnx.save(model, str(path))
    return path


def write_toy_model(path: Path, *, split: bool = True, full: bool = True) -> Path:
    """``path`` (full graph) and/or its split graphs beside it; returns ``path``."""
    lr = _pixels(contract.INPUT_LR)
    channel = helper.make_tensor_value_info(contract.IDR_CHANNEL, TensorProto.FLOAT, ["n", IDR_WIDTH])
    spatial = _pixels(contract.IDR_SPATIAL)
    sr = _pixels(contract.OUTPUT_SR, scale=SCALE)
    if full:
        _save(path, contract.GRAPH_FULL, _estimator_nodes() + _restorer_nodes(), [lr], [sr])
    if split:
        estimator, restorer = contract.split_paths(path)
        _save(estimator, contract.GRAPH_ESTIMATOR, _estimator_nodes(), [lr], [channel, spatial])
        _save(restorer, contract.GRAPH_RESTORER, _restorer_nodes(), [lr, channel, spatial], [sr])
    return path


def expected_sr(lr: np.ndarray) -> np.ndarray:
    """What the toy model gives for ``lr`` (3, H, W) as a whole, in numpy."""
    idr_channel = lr.mean(axis=(1, 2)) @ _W
    up = np.repeat(np.repeat(lr * 1.5, SCALE, axis=1), SCALE, axis=2)
    return (up + (idr_channel @ _V)[:, None, None]).astype(np.float32)
