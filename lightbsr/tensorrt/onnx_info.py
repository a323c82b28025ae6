"""What the engine builder needs to know about an ONNX file, read without running it (uses the onnx package)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lightbsr.contract import META_SCALE, parse_scale
from lightbsr.errors import ModelFileError
from lightbsr.files import sha256_file
from lightbsr.tensorrt.engine import Dims

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class OnnxInfo:
    """Inputs, ``lightbsr.*`` metadata and the precision the graph itself carries."""

    path: Path
    sha256: str
    inputs: dict[str, Dims]  # graph inputs (initializers excluded), dims None where dynamic
    metadata: dict[str, str] = field(default_factory=dict)  # lightbsr.* metadata_props
    has_qdq: bool = False  # QuantizeLinear/DequantizeLinear nodes: explicit quantization
    has_fp16: bool = False  # float16 tensors: converted to FP16 (mixed) precision
    uint8_qdq: bool = False  # asymmetric uint8 quantization, which TensorRT cannot run

    @property
    def precision(self) -> str:
        """``int8`` (Q/DQ), ``fp16`` (float16 tensors) or ``fp32``: what a strongly typed build gets."""
        return "int8" if self.has_qdq else "fp16" if self.has_fp16 else "fp32"

    @property
    def scale(self) -> int | None:
        value = self.metadata.get(META_SCALE, "")
        return parse_scale(value) if value else None


def read_onnx_info(path: str | os.PathLike[str]) -> OnnxInfo:
    """Read ``path``'s graph inputs, metadata and precision (external weights are not loaded)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError, ValueError, ... for a file that is not ONNX
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})") from err
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs: dict[str, Dims] = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        inputs[value.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)
    fp16 = onnx.TensorProto.FLOAT16
    uint8 = onnx.TensorProto.UINT8
    typed = [*graph.input, *graph.output, *graph.value_info]
    has_fp16 = any(v.type.tensor_type.elem_type == fp16 for v in typed) or any(
        init.data_type == fp16 for init in graph.initializer
    )
    has_fp16 = has_fp16 or any(
        node.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in node.attribute) for node in graph.node
    )
    init_types = {init.name: init.data_type for init in graph.initializer}
    quantize = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    uint8_qdq = any(len(node.input) > 2 and init_types.get(node.input[2]) == uint8 for node in quantize)
    return OnnxInfo(
        path=path,
        sha256=sha256_file(path),
        inputs=inputs,
        metadata={p.key: p.value for p in model.metadata_props if p.key.startswith("lightbsr.")},
        has_qdq=any(node.op_type in QDQ_OPS for node in graph.node),
        has_fp16=has_fp16,
        uint8_qdq=uint8_qdq,
    )
