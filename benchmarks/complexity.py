"""Model complexity: parameters and multiply-accumulates (MACs) of one forward pass at a given LR size.

The papers' "GFLOPs" are MACs (one multiply-add counted once) for a 256×256 LR input; we report
``macs`` and ``flops = 2 × macs``, labelled. Two counters that must agree:

* :func:`count_torch` runs the whole student forward (``estimate`` + ``restore``) on the ``meta``
  device under :class:`torch.utils.flop_counter.FlopCounterMode` (no memory, no arithmetic: fast at
  any size). The counted ops are convolutions and matrix products (conv, mm, addmm, bmm, ...);
  element-wise ops, norms and activations are not counted, as in the papers.
* :func:`count_onnx` reads an ONNX graph: parameters from its initializers (float, and INT8 weights of Q/DQ
  graphs; not scales or zero points), MACs from
  Conv/ConvTranspose/Gemm/MatMul with the shapes that ONNX shape inference gives at the size.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lightbsr.errors import ConfigError, ModelFileError, first_line

PAPERS_LR_SIZE = 256
"""The LR side at which the papers quote their "GFLOPs" (MACs)."""


@dataclass(frozen=True)
class Complexity:
    """Parameters and MACs of one model at one input size (batch 1 unless ``batch`` says otherwise)."""

    model: str
    arch: str
    params: int
    macs: int
    height: int
    width: int
    batch: int = 1
    counter: str = "torch.utils.flop_counter.FlopCounterMode"
    macs_by_op: dict[str, int] | None = None

    @property
    def flops(self) -> int:
        """FLOPs counted as 2 × MACs (one multiply and one add)."""
        return 2 * self.macs

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["flops"] = self.flops
        data["gmacs"] = round(self.macs / 1e9, 3)
        data["gflops"] = round(self.flops / 1e9, 3)
        data["note"] = "macs: multiply-accumulates (the papers' 'GFLOPs'); flops = 2 × macs"
        return data


def count_torch(model: Any, height: int, width: int | None = None, batch: int = 1, name: str = "") -> Complexity:
    """Parameters and MACs of a student's full forward, counted on the ``meta`` device.

    ``model`` is an ``nn.Module`` (a copy is moved to ``meta``; its weights are not touched) or an
    architecture name (built directly on ``meta``).
    """
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lightbsr.models import ModelConfig, build_model

    width = height if width is None else width
    _check_size(height, width, batch)
    if isinstance(model, str):
        config = ModelConfig.from_arch(model)
        _require_student(config.role, config.arch)
        with torch.device("meta"):
            net = build_model(config)
        arch = config.arch
    else:
        net = copy.deepcopy(model).to("meta")
        arch = name or type(model).__name__
        if "Teacher" in type(model).__name__:
            _require_student("teacher", arch)
    net.eval()
    params = sum(p.numel() for p in net.parameters())
    lr = torch.zeros(batch, 3, height, width, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(lr)
    by_op = {str(op): int(flops) // 2 for op, flops in counter.get_flop_counts().get("Global", {}).items()}
    macs = counter.get_total_flops() // 2
    return Complexity(name or arch, arch, params, macs, height, width, batch, macs_by_op=by_op)


def count_onnx(path: str | os.PathLike[str], height: int, width: int | None = None, batch: int = 1) -> Complexity:
    """Parameters (float initializers) and MACs (Conv/ConvTranspose/Gemm/MatMul) of an ONNX full graph."""
    import onnx
    from onnx import numpy_helper

    from lightbsr import contract

    width = height if width is None else width
    _check_size(height, width, batch)
    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError / OSError subclasses
        raise ModelFileError(f"{path}: not a readable ONNX file ({first_line(err)})") from err
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    int8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    qdq = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    quantized = {node.input[0] for node in qdq if node.op_type == "DequantizeLinear"}
    scales = {name for node in qdq for name in node.input[1:]}  # scales and zero points are not parameters
    params = sum(
        math.prod(t.dims)
        for t in graph.initializer
        if t.name not in scales and (t.data_type in float_types or (t.name in quantized and t.data_type in int8))
    )
    real_inputs = [i for i in graph.input if i.name not in initializers]
    if [i.name for i in real_inputs] != [contract.INPUT_LR]:
        raise ModelFileError(f"{path}: expected a student full graph with one input {contract.INPUT_LR!r}")
    dims = real_inputs[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (batch, 3, height, width), strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = value
    inferred = _infer_shapes(model, path)
    shapes: dict[str, list[int]] = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        shape = value.type.tensor_type.shape
        if shape.dim and all(d.HasField("dim_value") for d in shape.dim):
            shapes[value.name] = [d.dim_value for d in shape.dim]
    for t in graph.initializer:
        shapes[t.name] = list(t.dims)
    constants = {
        node.output[0]: list(numpy_helper.to_array(node.attribute[0].t).shape)
        for node in graph.node
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR
    }
    shapes.update(constants)
    # Q/DQ graphs: a DequantizeLinear output has its input's shape
    for node in graph.node:
        if node.op_type in ("DequantizeLinear", "QuantizeLinear", "Cast") and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])

    by_op: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        try:
            macs = _node_macs(node, shapes)
        except KeyError as err:
            raise ModelFileError(f"{path}: no static shape for {err} of {node.op_type} node {node.name!r}") from err
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    arch = {p.key: p.value for p in model.metadata_props}.get(contract.META_ARCH, "")
    return Complexity(
        path.name, arch, params, sum(by_op.values()), height, width, batch, "ONNX graph + shape inference", by_op
    )


def _infer_shapes(model: Any, path: Path) -> Any:
    """ONNX Runtime's symbolic shape inference (it folds the shape arithmetic that a traced graph keeps),
    else onnx's own."""
    from onnx import shape_inference

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # not installed, or an op it does not know: fall back to onnx's inference
        pass
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:
        raise ModelFileError(f"{path}: ONNX shape inference failed ({first_line(err)})") from err


def _node_macs(node: Any, shapes: dict[str, list[int]]) -> int:
    if node.op_type == "Conv":
        weight = shapes[node.input[1]]  # (Cout, Cin/groups, kh, kw)
        out = shapes[node.output[0]]  # (N, Cout, H, W)
        return math.prod(out) * math.prod(weight[1:])
    if node.op_type == "ConvTranspose":
        weight = shapes[node.input[1]]  # (Cin, Cout/groups, kh, kw): every input pixel × the whole kernel
        x = shapes[node.input[0]]
        return math.prod(x) * math.prod(weight[1:])
    if node.op_type == "Gemm":
        a = shapes[node.input[0]]
        out = shapes[node.output[0]]
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        return math.prod(out) * (a[0] if trans_a else a[1])
    a = shapes[node.input[0]]  # MatMul
    out = shapes[node.output[0]]
    return math.prod(out) * a[-1]


def _check_size(height: int, width: int, batch: int) -> None:
    if height < 1 or width < 1 or batch < 1:
        raise ConfigError(f"size and batch must be positive, got {height}×{width} batch {batch}")


def _require_student(role: str, arch: str) -> None:
    if role != "student":
        raise ConfigError(f"{arch}: complexity and latency are measured for students (a teacher needs its DRP/HR)")
