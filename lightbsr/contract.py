"""The files the stages hand over, and the names every stage agrees on (no torch, no onnx).

checkpoint (safetensors + config) → ONNX (metadata_props below) → engine (+ JSON sidecar).

ONNX graphs
    ``full``       lr → sr
    ``estimator``  lr → IDR   (LightBSR: idr_channel (N,48), idr_spatial (N,8,H,W); KDSR: idr (N,64))
    ``restorer``   lr, IDR → sr
All tensors are float32 NCHW (or the precision the graph was converted to), ``lr``
in [0, 1], ``sr`` unclamped; batch, height and width are dynamic. The split
graphs of ``model.onnx`` are ``model.estimator.onnx`` and ``model.restorer.onnx``;
engines follow the same naming (``model.engine``, ``model.estimator.engine``, ...).

This module is the one home of the model-file contract: :func:`resolve_graphs` says which
files make a model, :func:`check_io` whether a graph has the contract's tensors, and
:func:`check_metadata` whether its metadata is a lightbsr model's. Every backend uses them.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from lightbsr.errors import ConfigError, ModelFileError

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
META_INT8_TARGET = "lightbsr.int8_target"  # INT8 graphs: what the Q/DQ was made for, one of INT8_TARGETS
META_SOURCE_SHA256 = "lightbsr.source_sha256"  # sha256 of the checkpoint it was exported from
META_VERSION = "lightbsr.version"

# The Triton python-backend model (written by ``lightbsr export --triton`` / ``lightbsr serve``, run by
# lightbsr.runtime.triton_model): 8-bit images in and out, (N, H, W, C) with C = 1 (gray), 2 (gray + alpha),
# 3 (RGB) or 4 (RGBA); the config parameter TRITON_MODEL_PARAMETER names the model file it runs.
TRITON_IMAGE_INPUT = "image"
TRITON_IMAGE_OUTPUT = "upscaled"
TRITON_MODEL_PARAMETER = "model"


INT8_TARGETS = ("tensorrt", "cpu")
"""What an INT8 Q/DQ graph is made for (``lightbsr quantize --int8 --target``): ``tensorrt``, symmetric signed
INT8 activations (S8S8); ``cpu``, ONNX Runtime's fast x86 integer kernels (asymmetric uint8 activations, U8S8).
A graph without :data:`META_INT8_TARGET` predates the choice and is a ``tensorrt`` one."""


def int8_target(meta: Mapping[str, str]) -> str | None:
    """The INT8 target of a graph's metadata (``None`` for a graph that is not INT8)."""
    if meta.get(META_PRECISION) != "int8":
        return None
    return meta.get(META_INT8_TARGET) or "tensorrt"


def idr_names(family: str) -> tuple[str, ...]:
    """Names of the IDR tensors between the estimator and the restorer, in order."""
    return (IDR_CHANNEL, IDR_SPATIAL) if family == "lightbsr" else (IDR_VECTOR,)


FAMILIES = ("lightbsr", "kdsr")

SCALES = (2, 3, 4)
"""The upscaling factors of the architectures (every label that says a scale is checked against these)."""


def parse_scale(value: object) -> int:
    """A scale from a label (metadata string, JSON config value, sidecar): an integer in :data:`SCALES`.

    ``"4"`` and ``4`` pass; ``0``, ``100000``, ``4.5``, ``"4.0"``, ``True`` or ``"x4"`` are a
    ConfigError, so a lying label can neither crash the tiler nor ask it for terabytes.
    """
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value not in SCALES:
        raise ConfigError(f"scale {value!r} is not one of {', '.join(map(str, SCALES))}")
    return value


def check_sr(what: object, lr_shape: tuple[int, ...], sr_shape: tuple[int, ...], scale: int, finite: bool) -> None:
    """ModelFileError unless a model's output is ``scale`` × its input (batch and channels kept) and all finite.

    Every call of a model that produces an image is checked with this (each tile of a tiled image
    too): a model whose metadata says ×4 but which returns another size, or NaN/inf (NaN weights),
    must fail with one line rather than write a wrong or black image.
    """
    expected = (*lr_shape[:-2], lr_shape[-2] * scale, lr_shape[-1] * scale)
    if tuple(sr_shape) != tuple(expected):
        raise ModelFileError(
            f"{what}: the model returned {'×'.join(map(str, sr_shape))} for a {'×'.join(map(str, lr_shape))} input; "
            f"its metadata says ×{scale}, so {'×'.join(map(str, expected))} was expected"
        )
    if not finite:
        raise ModelFileError(f"{what}: the model's output holds NaN or infinite values (broken weights?)")


def split_paths(model_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``model.onnx`` → (``model.estimator.onnx``, ``model.restorer.onnx``) (names only; see :func:`resolve_graphs`)."""
    path = Path(model_path)
    return path.with_suffix(f".{GRAPH_ESTIMATOR}{path.suffix}"), path.with_suffix(f".{GRAPH_RESTORER}{path.suffix}")


@dataclass(frozen=True)
class ModelGraphs:
    """The files of one model: its full graph and its split graphs (which may or may not exist)."""

    full: Path
    estimator: Path
    restorer: Path

    @property
    def split(self) -> bool:
        """Whether both split graphs exist (what a shared degradation estimate needs)."""
        return self.estimator.is_file() and self.restorer.is_file()

    def present(self, kind: str = "model") -> dict[str, Path]:
        """{graph: path}: the split pair when both exist, else the full graph; ModelFileError when neither."""
        if self.split:
            return {GRAPH_ESTIMATOR: self.estimator, GRAPH_RESTORER: self.restorer}
        if self.full.is_file():
            return {GRAPH_FULL: self.full}
        raise ModelFileError(
            f"{self.full}: no such {kind} (looked for {self.full.name}, "
            f"or {self.estimator.name} + {self.restorer.name})"
        )


def resolve_graphs(path: str | os.PathLike[str]) -> ModelGraphs:
    """The files of the model ``path`` names: any of ``model.onnx``, ``model.estimator.onnx``, ``model.engine``, ...

    The one lookup of split graphs: the estimator and restorer sit beside the full graph,
    named by :func:`split_paths`.
    """
    path = Path(path)
    for graph in (GRAPH_ESTIMATOR, GRAPH_RESTORER):
        tag = f".{graph}{path.suffix}"
        if path.name.endswith(tag):
            path = path.with_name(path.name[: -len(tag)] + path.suffix)
            break
    estimator, restorer = split_paths(path)
    return ModelGraphs(path, estimator, restorer)


def graph_io(graph: str, family: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of a lightbsr ``graph`` (full / estimator / restorer) of ``family``."""
    idr = idr_names(family)
    return {
        GRAPH_FULL: ((INPUT_LR,), (OUTPUT_SR,)),
        GRAPH_ESTIMATOR: ((INPUT_LR,), idr),
        GRAPH_RESTORER: ((INPUT_LR, *idr), (OUTPUT_SR,)),
    }[graph]


def check_io(path: object, graph: str, family: str, inputs: Collection[str], outputs: Collection[str]) -> None:
    """ModelFileError unless ``inputs`` → ``outputs`` are the tensors of the lightbsr ``graph`` (any order)."""
    expected_in, expected_out = graph_io(graph, family)
    if set(inputs) != set(expected_in) or set(outputs) != set(expected_out):
        raise ModelFileError(
            f"{path}: tensors {sorted(inputs)} → {sorted(outputs)} do not match the lightbsr {graph} graph "
            f"({list(expected_in)} → {list(expected_out)})"
        )


def check_metadata(path: object, graph: str, meta: Mapping[str, str], kind: str = "graph") -> tuple[str, int]:
    """(family, scale) from the lightbsr metadata of a ``graph`` file; ModelFileError when it is not one.

    ``meta`` is the ONNX ``metadata_props`` (an engine's: the ONNX metadata its sidecar keeps).
    """
    if META_GRAPH not in meta:
        raise ModelFileError(f"{path}: not a lightbsr {kind} (no {META_GRAPH} metadata)")
    if meta[META_GRAPH] != graph:
        raise ModelFileError(f"{path}: a lightbsr {meta[META_GRAPH]} {kind}, not the {graph} {kind}")
    family = meta.get(META_FAMILY, "")
    if family not in FAMILIES:
        raise ModelFileError(f"{path}: unknown model family {family!r} in {META_FAMILY}")
    try:
        scale = parse_scale(meta.get(META_SCALE, ""))
    except ConfigError as err:
        raise ModelFileError(f"{path}: bad {META_SCALE} metadata: {err}") from None
    return family, scale
