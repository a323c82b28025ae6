"""Tiny ONNX files with the contract's tensor names and metadata, for the TensorRT tests.

Exported with plain ``torch.onnx.export`` (dynamic batch/height/width) or written with
``onnx.helper`` (the FP16 and Q/DQ variants), independent of the exporter.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from lightbsr.contract import (
    GRAPH_ESTIMATOR,
    GRAPH_FULL,
    GRAPH_RESTORER,
    IDR_CHANNEL,
    IDR_SPATIAL,
    IDR_VECTOR,
    INPUT_LR,
    META_ARCH,
    META_FAMILY,
    META_GRAPH,
    META_PRECISION,
    META_SCALE,
    META_VERSION,
    OUTPUT_SR,
)

SCALE = 4


def add_metadata(path: Path, family: str, graph: str, precision: str = "fp32") -> Path:
    model = onnx.load(str(path))
    arch = "lightbsr_student_x4" if family == "lightbsr" else "kdsr_student_m_x4"
    values = {
        META_ARCH: arch,
        META_FAMILY: family,
        META_SCALE: str(SCALE),
        META_GRAPH: graph,
        META_PRECISION: precision,
        META_VERSION: "test",
    }
    helper.set_model_props(model, values)
    onnx.save(model, str(path))
    return path


def export_torch_graphs(directory: Path) -> dict[str, Path]:
    """full / estimator / restorer graphs of a LightBSR-shaped toy, a KDSR restorer and a KDSR-teacher-like graph."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Full(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 3 * SCALE * SCALE, 3, padding=1)
            self.shuffle = nn.PixelShuffle(SCALE)

        def forward(self, lr: torch.Tensor) -> torch.Tensor:
            return self.shuffle(self.body(lr))

    class Estimator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Conv2d(3, 8, 3, padding=1)
            self.channel = nn.Linear(8, 48)

        def forward(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.features(lr)
            return self.channel(features.mean(dim=(2, 3))), features

    class Restorer(nn.Module):
        def __init__(self, idr_channels: int, spatial: bool) -> None:
            super().__init__()
            self.body = nn.Conv2d(3 + (8 if spatial else 0), 3 * SCALE * SCALE, 3, padding=1)
            self.modulation = nn.Linear(idr_channels, 3 * SCALE * SCALE)
            self.shuffle = nn.PixelShuffle(SCALE)

        def forward(self, lr: torch.Tensor, idr: torch.Tensor, spatial: torch.Tensor | None = None) -> torch.Tensor:
            x = lr if spatial is None else torch.cat([lr, spatial], dim=1)
            return self.shuffle(self.body(x) * torch.sigmoid(self.modulation(idr))[:, :, None, None])

    class Teacher(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.full = Full()
            self.hr = nn.Conv2d(3 * SCALE * SCALE, 3 * SCALE * SCALE, 1)

        def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
            return self.full(lr) + nn.functional.pixel_shuffle(self.hr(nn.functional.pixel_unshuffle(hr, SCALE)), SCALE)

    lr = torch.rand(1, 3, 8, 8)
    nhw = {0: "n", 2: "h", 3: "w"}
    sr_axes = {0: "n", 2: "h4", 3: "w4"}
    graphs = {
        "lightbsr_full": (Full(), (lr,), [INPUT_LR], [OUTPUT_SR], {INPUT_LR: nhw, OUTPUT_SR: sr_axes}),
        "lightbsr_estimator": (
            Estimator(),
            (lr,),
            [INPUT_LR],
            [IDR_CHANNEL, IDR_SPATIAL],
            {INPUT_LR: nhw, IDR_CHANNEL: {0: "n"}, IDR_SPATIAL: nhw},
        ),
        "lightbsr_restorer": (
            Restorer(48, spatial=True),
            (lr, torch.rand(1, 48), torch.rand(1, 8, 8, 8)),
            [INPUT_LR, IDR_CHANNEL, IDR_SPATIAL],
            [OUTPUT_SR],
            {INPUT_LR: nhw, IDR_CHANNEL: {0: "n"}, IDR_SPATIAL: nhw, OUTPUT_SR: sr_axes},
        ),
        "kdsr_restorer": (
            Restorer(64, spatial=False),
            (lr, torch.rand(1, 64)),
            [INPUT_LR, IDR_VECTOR],
            [OUTPUT_SR],
            {INPUT_LR: nhw, IDR_VECTOR: {0: "n"}, OUTPUT_SR: sr_axes},
        ),
        "kdsr_teacher": (
            Teacher(),
            (lr, torch.rand(1, 3, 8 * SCALE, 8 * SCALE)),
            [INPUT_LR, "hr"],
            [OUTPUT_SR],
            {INPUT_LR: nhw, "hr": {0: "n", 2: "h4", 3: "w4"}, OUTPUT_SR: sr_axes},
        ),
    }
    kinds = {
        "lightbsr_full": GRAPH_FULL,
        "lightbsr_estimator": GRAPH_ESTIMATOR,
        "lightbsr_restorer": GRAPH_RESTORER,
        "kdsr_restorer": GRAPH_RESTORER,
        "kdsr_teacher": GRAPH_FULL,
    }
    paths = {}
    for name, (module, args, inputs, outputs, axes) in graphs.items():
        path = directory / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                args,
                str(path),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                dynamo=False,
                opset_version=17,
            )
        paths[name] = add_metadata(path, name.split("_")[0], kinds[name])
    return paths


def _save_conv_graph(path: Path, nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto]) -> None:
    lr = helper.make_tensor_value_info(INPUT_LR, TensorProto.FLOAT, ["n", 3, "h", "w"])
    sr = helper.make_tensor_value_info(OUTPUT_SR, TensorProto.FLOAT, ["n", 3, "h", "w"])
    graph = helper.make_graph(nodes, path.stem, [lr], [sr], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_fp16_onnx(path: Path) -> Path:
    """lr (fp32) → Cast fp16 → Conv (fp16 weights) → Cast fp32 → sr: what an FP16 conversion keeping fp32 I/O gives."""
    import numpy as np

    weight = onnx.numpy_helper.from_array(np.full((3, 3, 3, 3), 0.1, np.float16), "w")
    nodes = [
        helper.make_node("Cast", [INPUT_LR], ["lr16"], to=TensorProto.FLOAT16),
        helper.make_node("Conv", ["lr16", "w"], ["y16"], pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["y16"], [OUTPUT_SR], to=TensorProto.FLOAT),
    ]
    _save_conv_graph(path, nodes, [weight])
    return add_metadata(path, "lightbsr", GRAPH_FULL, "fp16")


def write_qdq_onnx(path: Path, zero_point_type: int = TensorProto.INT8) -> Path:
    """lr → Q/DQ → Conv (Q/DQ weights) → sr: explicit INT8 quantization as ``lightbsr quantize`` writes it."""
    import numpy as np

    initializers = [
        onnx.numpy_helper.from_array(np.full((3, 3, 3, 3), 0.1, np.float32), "w"),
        onnx.numpy_helper.from_array(np.array(1 / 127, np.float32), "scale"),
        onnx.numpy_helper.from_array(np.array(0, helper.tensor_dtype_to_np_dtype(zero_point_type)), "zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", [INPUT_LR, "scale", "zero"], ["lr_q"]),
        helper.make_node("DequantizeLinear", ["lr_q", "scale", "zero"], ["lr_dq"]),
        helper.make_node("QuantizeLinear", ["w", "scale", "zero"], ["w_q"]),
        helper.make_node("DequantizeLinear", ["w_q", "scale", "zero"], ["w_dq"]),
        helper.make_node("Conv", ["lr_dq", "w_dq"], [OUTPUT_SR], pads=[1, 1, 1, 1]),
    ]
    _save_conv_graph(path, nodes, initializers)
    return add_metadata(path, "lightbsr", GRAPH_FULL, "int8")


_GRAPHS: dict[str, Path] = {}


def onnx_graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """All fixture graphs by name, written once per session however many test modules ask."""
    if not _GRAPHS:
        directory = tmp_path_factory.mktemp("onnx")
        _GRAPHS.update(export_torch_graphs(directory))
        _GRAPHS["fp16"] = write_fp16_onnx(directory / "fp16.onnx")
        _GRAPHS["qdq"] = write_qdq_onnx(directory / "qdq.onnx")
        _GRAPHS["qdq_uint8"] = write_qdq_onnx(directory / "qdq_uint8.onnx", TensorProto.UINT8)
    return dict(_GRAPHS)
