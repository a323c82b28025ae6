"""FP32 ONNX → mixed-precision FP16 and INT8 Q/DQ ONNX, for TensorRT (and ONNX Runtime).

* :func:`quantize_fp16`: weights and most ops in FP16; the ops that overflow or lose accuracy
  in FP16 stay FP32 (:data:`FP16_KEEP_FP32_OPS`: normalisation, global pooling, the
  Sigmoid/Softmax gates; plus onnxruntime's default block list). Inputs and outputs stay
  FP32 by default. Backend: ``onnxruntime.transformers.float16`` (ships with onnxruntime);
  NVIDIA ModelOpt AutoCast where ``modelopt`` is installed (the ``[modelopt]`` extra).
* :func:`quantize_int8`: explicit Q/DQ (``QuantizeLinear``/``DequantizeLinear``) with
  ``onnxruntime.quantization.quantize_static``, INT8 weights symmetric per output channel, for
  one of two targets (:data:`INT8_TARGET_SETTINGS`, recorded as ``lightbsr.int8_target``):

  - ``tensorrt``: INT8 activations, symmetric (TensorRT's INT8 is signed and symmetric); Q/DQ on
    the inputs of Conv, MatMul and Gemm (TensorRT's placement), biases left in FP32.
  - ``cpu``: what ONNX Runtime's x86 integer kernels are fast at. Activations asymmetric *uint8*
    (the U8S8 kernels: ``vpmaddubsw`` on AVX2, ``vpdpbusd`` with VNNI; S8S8 runs a much slower
    path); Q/DQ on the inputs *and outputs* of Conv, MatMul and Gemm with INT32 biases, so that
    ONNX Runtime's graph optimiser fuses each DQ → op → Q into ``QLinearConv`` / ``QLinearMatMul``
    (:func:`fused_int8_ops` checks it); depthwise convolutions stay FP32 (ONNX Runtime's uint8
    depthwise kernel was slower than its FP32 NCHWc one: the committed CPU report's notes).

  The first compute layer on the LR image and the last one(s) before each output stay FP32
  unless asked. Calibration data: LR crops made from the HR images of a folder with the
  training degradation model (:func:`calibration_crops`), seeded.

Both handle split graphs: when ``model.estimator.onnx`` and ``model.restorer.onnx`` sit beside
the input (same source checkpoint), they are converted too, so the runtime's tiled path gets
the same precision. FP16 converts each graph (IDR tensors stay FP32 at the graph boundary);
INT8 quantizes the full graph once and cuts the estimator and restorer out of it by tensor name:
calibration runs the FP32 graph, so the restorer's IDR ranges are those of the FP32 estimator's
output, and estimator → restorer computes exactly what the quantized full graph computes.

TensorRT 11 consumes these files as they are (strongly typed networks: the graph's types and
Q/DQ nodes decide the precision); TensorRT 10 builds them with ``--fp16`` (mixed precision)
or ``--int8`` (explicit quantization) set, or as a strongly typed network.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from tqdm import tqdm

from lightbsr import contract
from lightbsr.degradation import degrade, random_kernels
from lightbsr.errors import BackendUnavailableError, ConfigError, DatasetError, ModelFileError, first_line
from lightbsr.evaluation import list_images, read_image_rgb8
from lightbsr.files import sha256_file
from lightbsr.metrics import psnr_y_per_image
from lightbsr.runtime.onnxruntime_backend import run, session

from .int8_search import float_nodes, search
from .metadata import graph_inputs, load_onnx, require_lightbsr_model, set_metadata
from .onnx_export import GraphFile, cut_graph, write_graphs

__all__ = [
    "CALIBRATION_METHODS",
    "COMPUTE_OPS",
    "FP16_KEEP_FP32_OPS",
    "INT8_OPS",
    "INT8_TARGET_SETTINGS",
    "QuantizeResult",
    "boundary_nodes",
    "calibration_crops",
    "degraded_crops",
    "depthwise_nodes",
    "fused_int8_ops",
    "quantize_fp16",
    "quantize_int8",
    "sibling_graphs",
]

FP16_KEEP_FP32_OPS = (
    "LayerNormalization",
    "InstanceNormalization",
    "BatchNormalization",
    "ReduceMean",
    "GlobalAveragePool",
    "Sigmoid",
    "Softmax",
)
"""Op types kept in FP32 by :func:`quantize_fp16` (their inputs are cast up to FP32)."""

INT8_OPS = ("Conv", "MatMul", "Gemm")
"""Ops whose inputs get Q/DQ in :func:`quantize_int8` (TensorRT fuses DQ → op → Q around them)."""

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass(frozen=True)
class _Int8Target:
    """How ``quantize_static`` quantizes for one target (see the module docstring)."""

    activations: str  # QuantType name
    symmetric_activations: bool
    quantize_outputs: bool  # Q/DQ after the ops too (fusable into QLinear* kernels)
    quantize_bias: bool  # INT32 biases (ONNX Runtime's QLinearConv takes them)
    float_depthwise: bool
    description: str


INT8_TARGET_SETTINGS = {
    "tensorrt": _Int8Target(
        "QInt8", True, False, False, False, "int8, symmetric, per tensor; Q/DQ on the op inputs (TensorRT)"
    ),
    "cpu": _Int8Target(
        "QUInt8",
        False,
        True,
        True,
        True,
        "uint8, asymmetric, per tensor; Q/DQ on op inputs and outputs, INT32 biases, depthwise convs FP32 "
        "(ONNX Runtime U8S8 QLinearConv/QLinearMatMul)",
    ),
}
"""The targets of :data:`lightbsr.contract.INT8_TARGETS` and how each is quantized."""
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class QuantizeResult:
    """What :func:`quantize_fp16` / :func:`quantize_int8` wrote."""

    precision: str
    files: dict[str, GraphFile]
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def path(self) -> Path:
        return self.files[contract.GRAPH_FULL].path

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "files": {graph: f.to_dict() for graph, f in self.files.items()},
            "details": self.details,
            "seconds": self.seconds,
        }


# --------------------------------------------------------------------------- inputs


def sibling_graphs(path: str | os.PathLike[str]) -> dict[str, Path]:
    """The graphs to convert: ``full`` → ``path``, plus the split siblings if both exist and match it.

    Siblings from another export (a different source checkpoint or architecture) are ignored
    with a :class:`ModelFileError`, since converting them would hand the runtime a mismatched pair.
    """
    path = Path(path)
    graphs = {contract.GRAPH_FULL: path}
    main = require_lightbsr_model(load_onnx(path, load_weights=False), path)
    if main.get(contract.META_PRECISION, "fp32") != "fp32":
        raise ModelFileError(f"{path}: already a {main[contract.META_PRECISION]} model; convert the fp32 export")
    files = contract.resolve_graphs(path)
    if files.full != path or not files.split:
        return graphs
    for graph, sibling in ((contract.GRAPH_ESTIMATOR, files.estimator), (contract.GRAPH_RESTORER, files.restorer)):
        meta = require_lightbsr_model(load_onnx(sibling, load_weights=False), sibling)
        same = all(meta.get(k) == main.get(k) for k in (contract.META_ARCH, contract.META_SOURCE_SHA256))
        if not same or meta.get(contract.META_GRAPH) != graph or meta.get(contract.META_PRECISION) != "fp32":
            raise ModelFileError(f"{sibling}: not the fp32 {graph} graph of {path.name}; re-export with --split")
        graphs[graph] = sibling
    return graphs


def _load_fp32(path: Path) -> tuple[onnx.ModelProto, dict[str, str]]:
    model = load_onnx(path)
    meta = require_lightbsr_model(model, path)
    if meta.get(contract.META_PRECISION, "fp32") != "fp32":
        raise ModelFileError(f"{path}: already a {meta[contract.META_PRECISION]} model; convert the fp32 export")
    return model, meta


def _output_paths(src: dict[str, Path], output: str | os.PathLike[str]) -> dict[str, Path]:
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise ConfigError(f"{output}: the output must be an .onnx file")
    if output.resolve() == src[contract.GRAPH_FULL].resolve():
        raise ConfigError(f"{output}: the output would overwrite the input model")
    estimator, restorer = contract.split_paths(output)
    targets = {contract.GRAPH_FULL: output, contract.GRAPH_ESTIMATOR: estimator, contract.GRAPH_RESTORER: restorer}
    return {graph: targets[graph] for graph in src}


def _precision_meta(meta: dict[str, str], precision: str, parent: Path, details: dict[str, Any]) -> dict[str, str]:
    return {
        **meta,
        contract.META_PRECISION: precision,
        "lightbsr.parent_sha256": sha256_file(parent),
        f"lightbsr.{precision}": json.dumps(details, sort_keys=True),
    }


def _check(model: onnx.ModelProto, what: str) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ModelFileError(f"converted {what} graph fails the ONNX checker: {first_line(err)}") from err


# --------------------------------------------------------------------------- FP16


def quantize_fp16(
    model_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    keep_io_types: bool = True,
    keep_fp32_ops: Sequence[str] = FP16_KEEP_FP32_OPS,
    backend: str = "ort",
    progress: bool = False,
) -> QuantizeResult:
    """Mixed-precision FP16 copy of an FP32 lightbsr ONNX model (and of its split siblings).

    ``backend``: ``"ort"`` (``onnxruntime.transformers.float16.convert_float_to_float16`` with an
    op block list) or ``"modelopt"`` (NVIDIA ModelOpt AutoCast, ``convert_to_mixed_precision``
    with the same op types excluded; needs the ``[modelopt]`` extra).
    """
    if backend not in ("ort", "modelopt"):
        raise ConfigError(f"unknown FP16 backend {backend!r}; choose 'ort' or 'modelopt'")
    start = time.perf_counter()
    sources = sibling_graphs(model_path)
    targets = _output_paths(sources, output)
    details = {"backend": backend, "keep_io_types": keep_io_types, "keep_fp32_ops": sorted(keep_fp32_ops)}
    converted = {}
    for graph, src in tqdm(sources.items(), desc="fp16", unit="graph", disable=not progress):
        model, meta = _load_fp32(src)
        if backend == "ort":
            from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

            half = convert_float_to_float16(
                model, keep_io_types=keep_io_types, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *keep_fp32_ops]
            )
        else:
            half = _modelopt_fp16(src, keep_io_types, keep_fp32_ops)
        _toposort(half)
        set_metadata(half, _precision_meta(meta, "fp16", src, details))
        _check(half, graph)
        converted[targets[graph]] = half
    files = write_graphs(converted)
    return QuantizeResult(
        "fp16", {g: files[targets[g]] for g in sources}, details, round(time.perf_counter() - start, 3)
    )


def _toposort(model: onnx.ModelProto) -> None:
    """Order the nodes topologically in place (the FP16 converter appends its input casts at the end)."""
    nodes = list(model.graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    waiting = [0] * len(nodes)
    users: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in set(node.input):
            if name in producer:
                waiting[i] += 1
                users.setdefault(producer[name], []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    ordered = []
    while ready:
        i = ready.pop(0)
        ordered.append(nodes[i])
        for user in users.get(i, []):
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    if len(ordered) != len(nodes):
        raise ModelFileError("converted graph has a cycle")
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def _modelopt_fp16(src: Path, keep_io_types: bool, keep_fp32_ops: Sequence[str]) -> onnx.ModelProto:
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError as err:
        raise BackendUnavailableError(
            "the modelopt FP16 backend needs NVIDIA ModelOpt: pip install 'lightbsr[modelopt]'"
        ) from err
    return convert_to_mixed_precision(
        onnx_path=str(src),
        low_precision_type="fp16",
        op_types_to_exclude=list(keep_fp32_ops),
        keep_io_types=keep_io_types,
    )


# --------------------------------------------------------------------------- INT8


def calibration_crops(
    images_dir: str | os.PathLike[str],
    *,
    count: int = 32,
    size: int = 64,
    scale: int = 4,
    setting: int = 1,
    seed: int = 0,
) -> list[np.ndarray]:
    """``count`` LR crops ``(3, h, w)`` float32 in [0, 1], made like the training data.

    Each crop: an HR image of the folder (in turn), a random ``scale·size`` square crop (smaller,
    a multiple of ``scale``, where the image is smaller), a random kernel (and noise) of the
    degradation ``setting`` (:func:`lightbsr.degradation.random_kernels`), then
    :func:`lightbsr.degradation.degrade`. Seeded: the same arguments give the same crops.
    """
    return [lr for lr, _ in degraded_crops(list_images(images_dir), count, size, scale, setting, seed)]


def degraded_crops(
    files: Sequence[Path], count: int, size: int, scale: int, setting: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LR, HR) pairs of :func:`calibration_crops` from ``files``: float32 ``(3, h, w)`` and ``(3, sh, sw)``."""
    if count < 1 or size < 4:
        raise ConfigError(f"calibration needs count ≥ 1 and size ≥ 4, got count {count}, size {size}")
    generator = torch.Generator().manual_seed(seed)
    crops = []
    images: dict[Path, torch.Tensor] = {}
    for i in range(count):
        path = files[i % len(files)]
        if path not in images:
            try:
                images[path] = torch.from_numpy(read_image_rgb8(path)).permute(2, 0, 1).float()
            except Exception as err:
                raise DatasetError(str(err)) from err
        hr = images[path]
        height, width = (min(size * scale, side - side % scale) for side in hr.shape[1:])
        if min(height, width) < 4 * scale:
            raise DatasetError(f"{path} ({hr.shape[1]}×{hr.shape[2]}) is too small for a calibration crop")
        top = int(torch.randint(0, hr.shape[1] - height + 1, (1,), generator=generator))
        left = int(torch.randint(0, hr.shape[2] - width + 1, (1,), generator=generator))
        patch = hr[None, :, top : top + height, left : left + width]
        draw = random_kernels(1, setting, generator=generator)
        lr = degrade(patch, draw.kernels, scale, draw.noise_sigmas, generator=generator)
        crops.append(((lr[0] / 255.0).numpy(), (patch[0] / 255.0).numpy()))
    return crops


def boundary_nodes(model: onnx.ModelProto, image_input: str = contract.INPUT_LR) -> list[str]:
    """Names of the first compute nodes on ``image_input`` and the last ones before every output.

    A compute node is a Conv, MatMul or Gemm. The 1×1 three-channel mean-shift convolutions
    are passed through (and included), so that the first and last *real* layers are found.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weights = {init.name: init for init in model.graph.initializer}
    shape_ops = ("Shape", "Size")  # shape computations are not data flow

    def mean_shift(node: onnx.NodeProto) -> bool:
        w = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        return w is not None and list(w.dims) == [3, 3, 1, 1]

    found: list[str] = []

    def walk(start: list[onnx.NodeProto], nxt: Any) -> None:
        seen: set[str] = set()
        stack = list(start)
        while stack:
            node = stack.pop()
            if node.name in seen or node.op_type in shape_ops:
                continue
            seen.add(node.name)
            if node.op_type in COMPUTE_OPS:
                found.append(node.name)
                if not mean_shift(node):
                    continue
            stack.extend(nxt(node))

    walk(consumers.get(image_input, []), lambda n: [c for out in n.output for c in consumers.get(out, [])])
    outputs = [producers[o.name] for o in model.graph.output if o.name in producers]
    walk(outputs, lambda n: [producers[i] for i in n.input if i in producers])
    return list(dict.fromkeys(found))


def depthwise_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the depthwise Conv nodes (``group`` > 1 and equal to the weight's output channels)."""
    weights = {init.name: init for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if group > 1 and weight is not None and weight.dims[0] == group and weight.dims[1] == 1:
            found.append(node.name)
    return found


def fused_int8_ops(path: str | os.PathLike[str]) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime's CPU provider runs (after its optimiser), integer kernels first.

    Whether a Q/DQ graph's layers became integer kernels (``QLinearConv``, ``QLinearMatMul``, ``QGemm``,
    ``MatMulIntegerToFloat``, ...) or stayed float ops between QuantizeLinear/DequantizeLinear pairs.
    """
    with tempfile.TemporaryDirectory(prefix="lightbsr-opt-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        # "extended": the Q/DQ fusions, without the machine-specific layout transforms of "all"
        session(path, threads=1, optimize="extended", save_optimized=optimized)
        graph = onnx.load(str(optimized), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    integer = {op: n for op, n in counts.items() if op.startswith(("QLinear", "QGemm", "MatMulInteger", "ConvInteger"))}
    return dict(sorted(integer.items())) | {op: n for op, n in sorted(counts.items()) if op not in integer}


def _session(model: onnx.ModelProto, optimize: bool = True) -> Any:
    return session(model.SerializeToString(), optimize=optimize)


class _HeldOut:
    """The quality measures of the INT8 search, on held-out (LR, HR) crops against the FP32 model.

    ``drop``: mean protocol Y-PSNR (SR clamped and rounded to 8 bits, ``scale`` pixels shaved)
    of the FP32 model minus that of a candidate, in dB. ``noise``: mean squared difference of a
    candidate's output from the FP32 output on two small crops (the per-layer sensitivity).
    """

    SENSITIVITY_CROPS = 2
    SENSITIVITY_SIZE = 16

    def __init__(self, fp32: onnx.ModelProto, pairs: list[tuple[np.ndarray, np.ndarray]], scale: int) -> None:
        self.pairs, self.scale = pairs, scale
        side = self.SENSITIVITY_SIZE
        self.small = [lr[None, :, :side, :side] for lr, _ in pairs[: self.SENSITIVITY_CROPS]]
        reference = _session(fp32)
        self.reference = self._psnr(reference)
        self.small_reference = [run(reference, {contract.INPUT_LR: lr})[0] for lr in self.small]

    def _psnr(self, candidate: object) -> float:
        scores = []
        for lr, hr in self.pairs:
            (sr,) = run(candidate, {contract.INPUT_LR: lr[None]})  # type: ignore[arg-type]
            sr8 = torch.from_numpy(sr).clamp(0.0, 1.0).mul(255.0).round().div(255.0)
            scores.append(float(psnr_y_per_image(sr8, torch.from_numpy(hr[None]), shave=self.scale)[0]))
        return float(np.mean(scores))

    def drop(self, candidate: onnx.ModelProto) -> float:
        return self.reference - self._psnr(_session(candidate))

    def noise(self, candidate: onnx.ModelProto) -> float:
        quick = _session(candidate, optimize=False)  # hundreds of sessions: skip graph optimisation
        errors = [
            float(np.mean((run(quick, {contract.INPUT_LR: lr})[0] - ref) ** 2))
            for lr, ref in zip(self.small, self.small_reference, strict=True)
        ]
        return float(np.mean(errors))


class _Feeds:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over a list of feed dicts (strided)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.set_range(0, len(feeds))

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self.feeds[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _ensure_node_names(model: onnx.ModelProto) -> None:
    used: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in used:
            node.name = f"{node.op_type}_{i}"
        used.add(node.name)


def quantize_int8(
    model_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    calib_dir: str | os.PathLike[str],
    *,
    count: int = 32,
    size: int = 64,
    setting: int | None = None,
    method: str = "minmax",
    seed: int = 0,
    quantize_first_last: bool = False,
    max_drop: float | None = None,
    max_float_layers: int | None = None,
    eval_count: int = 16,
    eval_size: int = 48,
    target: str = "tensorrt",
    progress: bool = False,
) -> QuantizeResult:
    """INT8 Q/DQ copy of an FP32 lightbsr student ONNX model (and of its split siblings), for ``target``.

    With ``max_drop`` (dB), the quality is checked: the HR images are split into calibration
    images and held-out images (every fourth, at least one; with a single image, other crops of
    it), and the protocol Y-PSNR of the INT8 model against HR on ``eval_count`` held-out crops is
    compared with the FP32 model's. Beyond the bound, the most sensitive layers are left in float
    (:func:`lightbsr.export.int8_search.search`) until the drop is within it; ConfigError (nothing
    written) when more than ``max_float_layers`` would be needed (default: half of them).

    Args:
        model_path: FP32 model from :func:`lightbsr.export.export_onnx`.
        output: the ``.onnx`` to write (split siblings beside it).
        calib_dir: folder of HR images; calibration uses :func:`calibration_crops` from them.
        count, size: number and side of the LR calibration crops.
        setting: degradation setting of the crops (default: the model's, else 1).
        method: calibration method, ``minmax`` | ``entropy`` | ``percentile``.
        quantize_first_last: also quantize the first and last compute layers (:func:`boundary_nodes`).
        max_drop, max_float_layers, eval_count, eval_size: the quality bound (see above).
        target: ``tensorrt`` (symmetric int8 activations) or ``cpu`` (ONNX Runtime's U8S8 kernels);
            see :data:`INT8_TARGET_SETTINGS`.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    if target not in INT8_TARGET_SETTINGS:
        raise ConfigError(f"unknown INT8 target {target!r}; choose one of {', '.join(contract.INT8_TARGETS)}")
    how = INT8_TARGET_SETTINGS[target]
    start = time.perf_counter()
    sources = sibling_graphs(model_path)
    targets = _output_paths(sources, output)
    full, meta = _load_fp32(sources[contract.GRAPH_FULL])
    if graph_inputs(full) != [contract.INPUT_LR]:
        raise ConfigError(
            f"{model_path}: INT8 calibration feeds LR images only; this graph takes {graph_inputs(full)} (a teacher?)"
        )
    if setting is None:
        setting = int(meta.get(contract.META_SETTING) or 1)
    try:
        scale = contract.parse_scale(meta.get(contract.META_SCALE, ""))
    except ConfigError as err:
        raise ModelFileError(f"{model_path}: bad {contract.META_SCALE} metadata: {err}") from None
    files = list_images(calib_dir)
    held_out: list[Path] = []
    if max_drop is not None:
        if not max_drop >= 0:
            raise ConfigError(f"--max-drop must be >= 0 dB, got {max_drop}")
        held_out = files[3::4] or files[-1:]
        files = [f for f in files if f not in held_out] or files
    crops = degraded_crops(files, count, size, scale, setting, seed)
    lr_feeds = [{contract.INPUT_LR: lr[None]} for lr, _ in crops]
    details: dict[str, Any] = {
        "calibration": {"count": count, "size": size, "setting": setting, "method": method, "seed": seed},
        "target": target,
        "weights": "int8, symmetric, per output channel",
        "activations": how.description,
        "quantized_ops": list(INT8_OPS),
        "excluded_nodes": [],
    }
    calibration = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    model, graph_meta = full, meta
    _ensure_node_names(model)
    excluded = [] if quantize_first_last else boundary_nodes(model)
    if how.float_depthwise:
        excluded += [name for name in depthwise_nodes(model) if name not in excluded]
    reference = onnx.ModelProto()
    reference.CopyFrom(model)  # quantize_static moves the weights of the model it is given to external files
    details["excluded_nodes"] = excluded
    with tempfile.TemporaryDirectory(prefix="lightbsr-int8-") as tmp:
        quantized_path = Path(tmp) / "full.int8.onnx"
        bar = tqdm(total=1, desc="int8 (calibrate + quantize)", disable=not progress)
        try:
            with bar, _quiet_root_logger():  # ORT logs "consider pre-processing" on the root logger
                quantize_static(
                    model,
                    quantized_path,
                    _Feeds(lr_feeds),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(INT8_OPS),
                    per_channel=True,
                    activation_type=QuantType[how.activations],
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=excluded,
                    calibrate_method=calibration,
                    extra_options={
                        "ActivationSymmetric": how.symmetric_activations,
                        "WeightSymmetric": True,
                        # TensorRT takes FP32 biases, not INT32 DequantizeLinear; ONNX Runtime's QLinearConv INT32
                        "QuantizeBias": how.quantize_bias,
                        # TensorRT: Q/DQ on the inputs only, no output rounding feeds residual adds;
                        # CPU: on the outputs too, so that DQ → op → Q fuses into one integer kernel
                        "OpTypesToExcludeOutputQuantization": [] if how.quantize_outputs else list(INT8_OPS),
                        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                        "CalibStridedMinMax": 1,  # one crop's activations in memory at a time (any method)
                    },
                )
                bar.update(1)
        except (ValueError, RuntimeError) as err:
            raise ModelFileError(f"{model_path}: INT8 quantization failed ({first_line(err)})") from err
        quantized = onnx.load(str(quantized_path))
    quantized.ir_version = model.ir_version
    if max_drop is not None:
        pairs = degraded_crops(held_out, eval_count, eval_size, scale, setting, seed + 1)
        quality = _HeldOut(reference, pairs, scale)
        found = search(
            quantized, reference, quality.drop, quality.noise, max_drop, max_float=max_float_layers, progress=progress
        )
        quantized = float_nodes(quantized, reference, found.float_nodes)
        details["calibration"]["images"] = len(files)
        details["quality"] = {
            "max_drop_db": max_drop,
            "drop_db": round(found.drop, 4),
            "full_int8_drop_db": round(found.full_int8_drop, 4),
            "float_layers": found.float_nodes,
            "quantized_layers": found.candidates - len(found.float_nodes),
            "held_out": {"images": len(held_out), "crops": eval_count, "size": eval_size, "seed": seed + 1},
            "search": found.steps,
        }
    converted = {targets[contract.GRAPH_FULL]: quantized}
    if len(sources) > 1:
        # The split graphs are cut from the quantized full graph: calibration ran the FP32 graph, so the
        # restorer's IDR ranges are those of the FP32 estimator, and estimator → restorer equals the full graph.
        family = graph_meta[contract.META_FAMILY]
        idr = list(contract.idr_names(family))
        cuts = {
            contract.GRAPH_ESTIMATOR: ([contract.INPUT_LR], idr),
            contract.GRAPH_RESTORER: ([contract.INPUT_LR, *idr], [contract.OUTPUT_SR]),
        }
        for graph, (ins, outs) in cuts.items():
            like = load_onnx(sources[graph], load_weights=False)
            converted[targets[graph]] = cut_graph(quantized, ins, outs, like)
    for written_path, graph_model in converted.items():
        graph = next(g for g, t in targets.items() if t == written_path)
        src_meta = {**meta, contract.META_GRAPH: graph}
        recorded = {**details["calibration"], **({"quality": details["quality"]} if "quality" in details else {})}
        recorded["target"] = target
        written = _precision_meta(src_meta, "int8", sources[graph], recorded)
        set_metadata(graph_model, {**written, contract.META_INT8_TARGET: target})
        _check(graph_model, graph)
    files = write_graphs(converted)
    kernels = fused_int8_ops(files[targets[contract.GRAPH_FULL]].path)
    details["onnxruntime_cpu_kernels"] = {
        op: n for op, n in kernels.items() if op.startswith(("Q", "MatMulInteger", "ConvInteger")) or op in COMPUTE_OPS
    }
    return QuantizeResult(
        "int8", {g: files[targets[g]] for g in sources}, details, round(time.perf_counter() - start, 3)
    )
