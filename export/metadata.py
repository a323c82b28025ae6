"""ONNX model files: loading with clear errors, the ``metadata_props`` of :mod:`lightbsr.contract`, graph facts.

No torch here: the TensorRT builder and the benchmarks read exported models through these helpers.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import onnx

from lightbsr import contract
from lightbsr.errors import ModelFileError, first_line

__all__ = [
    "graph_inputs",
    "graph_outputs",
    "load_onnx",
    "op_counts",
    "read_onnx_metadata",
    "set_metadata",
]


def load_onnx(path: str | os.PathLike[str], *, load_weights: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, raising :class:`ModelFileError` (one line) if it is missing or not ONNX."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
    except Exception as err:  # protobuf raises DecodeError, onnx raises ValueError/OSError for external data
        raise ModelFileError(f"{path}: not a readable ONNX model ({first_line(err)})") from err
    if not model.graph.node or not model.graph.output:
        raise ModelFileError(f"{path}: not an ONNX model (no graph)")
    return model


def read_onnx_metadata(path_or_model: str | os.PathLike[str] | onnx.ModelProto) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model as a dict (keys of :mod:`lightbsr.contract`, among others)."""
    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else load_onnx(path_or_model)
    return {prop.key: prop.value for prop in model.metadata_props}


def set_metadata(model: onnx.ModelProto, values: Mapping[str, str]) -> None:
    """Set (add or replace) ``metadata_props`` entries in place; other entries are kept."""
    current = {prop.key: prop.value for prop in model.metadata_props}
    current.update({key: str(value) for key, value in values.items()})
    del model.metadata_props[:]
    for key, value in current.items():
        model.metadata_props.add(key=key, value=value)


def graph_inputs(model: onnx.ModelProto) -> list[str]:
    """Names of the real inputs (initializers listed as inputs by old exporters are left out)."""
    initializers = {init.name for init in model.graph.initializer}
    return [value.name for value in model.graph.input if value.name not in initializers]


def graph_outputs(model: onnx.ModelProto) -> list[str]:
    return [value.name for value in model.graph.output]


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(Counter(node.op_type for node in model.graph.node).most_common())


def require_lightbsr_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> dict[str, str]:
    """The lightbsr metadata of ``model``; :class:`ModelFileError` if it was not exported by lightbsr."""
    meta = read_onnx_metadata(model)
    missing = [key for key in (contract.META_ARCH, contract.META_GRAPH, contract.META_SCALE) if key not in meta]
    if missing:
        raise ModelFileError(f"{path}: not a lightbsr ONNX model (no {', '.join(missing)} in its metadata)")
    return meta
