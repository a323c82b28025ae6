"""Checkpoint → ONNX: one graph with dynamic batch, height and width, plus the split graphs deployment needs.

How a model is exported, top to bottom:

1. The model (eval mode) is wrapped so that one trace returns the SR image *and* the IDR
   (``sr, idr_channel, idr_spatial`` for LightBSR, ``sr, idr`` for KDSR), and traced once
   with PyTorch's TorchScript-based ONNX exporter at a small odd size, with batch, height
   and width dynamic (``dynamic_axes``). BatchNorm is folded into the convolutions by the
   exporter's eval-mode passes; GELU is the exact, Erf-based form at opset 17.
2. onnxslim simplifies that graph (constant folding, shape-computation clean-up).
3. The graphs are cut out of it by tensor name (:class:`onnx.utils.Extractor`): ``full``
   (inputs → ``sr``), and with ``split`` the ``estimator`` (inputs → IDR) and the
   ``restorer`` (``lr`` + IDR → ``sr``), so all three share one trace and one set of weights.
4. Each graph gets the metadata of :mod:`lightbsr.contract`, passes ``onnx.checker``
   (``full_check``) and strict shape inference.
5. Verification (on by default): ONNX Runtime (CPU) runs the graphs at another batch and
   size than the trace (batch 2, an odd height and width) and must match PyTorch to 1e-4
   relative, the split graphs composed must match the full graph to 1e-5 relative.
6. The files are written atomically, self-contained (no external data): on any failure
   nothing is left.

Why the TorchScript exporter (``dynamo=False``) rather than the default ``torch.export``
one: on these models it exports in seconds rather than minutes (the per-op symbolic
shape reasoning of ``torch.export`` over ~3,000 ops is slow), it writes opset 17 natively
(the dynamo exporter starts at opset 18 and its down-conversion fails on these graphs),
and it needs no extra package (onnxscript). After onnxslim both give the same operator set.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx.utils import Extractor
from torch import nn
from tqdm import tqdm

from lightbsr import contract
from lightbsr._version import __version__
from lightbsr.checkpoint import load_checkpoint
from lightbsr.errors import CheckpointError, ConfigError, ModelFileError, first_line
from lightbsr.files import atomic_output, sha256_file
from lightbsr.models import KDSRTeacher, LightBSRTeacher, ModelConfig

from .metadata import graph_inputs, set_metadata

__all__ = [
    "DEFAULT_OPSET",
    "SUPPORTED_OPSETS",
    "ExportResult",
    "GraphFile",
    "export_onnx",
    "input_names",
    "output_names",
    "sample_inputs",
]

DEFAULT_OPSET = 17
"""Opset 17: LayerNormalization is a single op (TensorRT ≥ 8.6 parses it), GELU is Erf-based."""
SUPPORTED_OPSETS = (17, 18, 19, 20)

TRACE_SIZE = (1, 19, 13)
"""Batch, height, width of the trace input: small and odd, so no size is special-cased."""
VERIFY_SIZE = (2, 14, 11)
"""Batch, height, width at which the exported graphs are verified: differs from the trace in every dim."""

FULL_TOLERANCE = 1e-4
"""ONNX Runtime vs PyTorch, max|a − b| / max|b| (the reference-vector criterion)."""
SPLIT_TOLERANCE = 1e-5
"""Split graphs composed vs the full graph."""


# --------------------------------------------------------------------------- tensor names


def input_names(config: ModelConfig) -> list[str]:
    """Inputs of the full (and estimator) graph: ``lr``, plus ``drp`` or ``hr`` for teachers."""
    if config.role == "teacher":
        return [contract.INPUT_LR, contract.INPUT_DRP if config.family == "lightbsr" else contract.INPUT_HR]
    return [contract.INPUT_LR]


def output_names(config: ModelConfig, graph: str = contract.GRAPH_FULL) -> list[str]:
    """Outputs of a graph: ``sr`` (full, restorer) or the IDR tensors (estimator)."""
    return list(contract.idr_names(config.family)) if graph == contract.GRAPH_ESTIMATOR else [contract.OUTPUT_SR]


def _dynamic_axes(config: ModelConfig) -> dict[str, dict[int, str]]:
    image = {0: "batch", 2: "height", 3: "width"}
    axes: dict[str, dict[int, str]] = {
        contract.INPUT_LR: image,
        contract.OUTPUT_SR: {0: "batch", 2: "sr_height", 3: "sr_width"},
        contract.INPUT_DRP: {0: "batch"},
        contract.INPUT_HR: {0: "batch", 2: "sr_height", 3: "sr_width"},
        contract.IDR_CHANNEL: {0: "batch"},
        contract.IDR_SPATIAL: image,
        contract.IDR_VECTOR: {0: "batch"},
    }
    names = {*input_names(config), contract.OUTPUT_SR, *contract.idr_names(config.family)}
    return {name: dims for name, dims in axes.items() if name in names}


def sample_inputs(
    model: nn.Module, config: ModelConfig, batch: int, height: int, width: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random inputs of the full graph, by name: ``lr`` in [0, 1], and ``drp`` / ``hr`` for teachers."""
    generator = torch.Generator().manual_seed(seed)
    feeds = {contract.INPUT_LR: torch.rand(batch, 3, height, width, generator=generator)}
    if isinstance(model, LightBSRTeacher):
        feeds[contract.INPUT_DRP] = 0.1 * torch.randn(batch, model.drp_channels, generator=generator)
    elif isinstance(model, KDSRTeacher):
        s = config.scale
        feeds[contract.INPUT_HR] = torch.rand(batch, 3, s * height, s * width, generator=generator)
    return feeds


class _SRAndIDR(nn.Module):
    """Returns ``(sr, *idr)`` so that one trace holds the full, estimator and restorer graphs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: torch.Tensor, *extra: torch.Tensor) -> tuple[torch.Tensor, ...]:
        idr = self.model.estimate(lr, *extra)
        sr = self.model.restore(lr, idr)
        return (sr, *idr) if isinstance(idr, tuple) else (sr, idr)


# --------------------------------------------------------------------------- result


@dataclass
class GraphFile:
    """One written ONNX file."""

    graph: str
    path: Path
    inputs: list[str]
    outputs: list[str]
    nodes: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and measured."""

    config: ModelConfig
    opset: int
    simplified: bool
    source_sha256: str
    files: dict[str, GraphFile]
    nodes_exported: int
    """Nodes of the traced graph (SR and IDR outputs) before onnxslim."""
    nodes_simplified: int | None
    """The same graph after onnxslim (``None`` without simplification)."""
    seconds: dict[str, float] = field(default_factory=dict)
    verification: dict[str, float] = field(default_factory=dict)
    """Relative errors measured by the verification step (empty if it was skipped)."""

    @property
    def path(self) -> Path:
        return self.files[contract.GRAPH_FULL].path

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.config.arch,
            "opset": self.opset,
            "simplified": self.simplified,
            "source_sha256": self.source_sha256,
            "nodes_exported": self.nodes_exported,
            "nodes_simplified": self.nodes_simplified,
            "files": {graph: f.to_dict() for graph, f in self.files.items()},
            "seconds": self.seconds,
            "verification": self.verification,
        }


# --------------------------------------------------------------------------- export


def _resolve_source(
    source: str | os.PathLike[str] | nn.Module, config: ModelConfig | None
) -> tuple[nn.Module, ModelConfig, str]:
    if isinstance(source, nn.Module):
        if config is None:
            raise ConfigError("exporting a model object needs its ModelConfig (config=...)")
        return source.eval(), config, ""
    path = Path(source)
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path}: an ONNX model, not a lightbsr checkpoint (.safetensors)")
    model, loaded_config = load_checkpoint(path)
    if config is not None and config.arch != loaded_config.arch:
        raise CheckpointError(f"{path}: holds a {loaded_config.arch} model, not {config.arch}")
    return model, loaded_config, sha256_file(path)


def _trace(model: nn.Module, config: ModelConfig, opset: int) -> onnx.ModelProto:
    """One TorchScript-exporter trace of ``(sr, *idr)`` with dynamic batch, height and width."""
    batch, height, width = TRACE_SIZE
    feeds = sample_inputs(model, config, batch, height, width)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the legacy-exporter deprecation notice, and tracer notes on the input-shape checks (constant by design)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _SRAndIDR(model).eval(),
            tuple(feeds.values()),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=list(feeds),
            output_names=[contract.OUTPUT_SR, *contract.idr_names(config.family)],
            dynamic_axes=_dynamic_axes(config),
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def _simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    simplified = onnxslim.slim(model)
    if not isinstance(simplified, onnx.ModelProto):  # pragma: no cover - onnxslim returns the model
        raise ModelFileError("onnxslim returned no model")
    return simplified


def cut_graph(
    model: onnx.ModelProto, inputs: list[str], outputs: list[str], like: onnx.ModelProto | None = None
) -> onnx.ModelProto:
    """The subgraph of ``model`` from the tensors ``inputs`` to ``outputs`` (:class:`onnx.utils.Extractor`).

    Keeps the source's IR version, opsets and metadata. With ``like`` (a model with the same
    inputs and outputs), the new graph's input and output types are copied from it, so that
    dims keep their names (``batch``, ``height``, ...) where shape inference would invent some.
    """
    known = {v.name for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    if like is not None or any(name not in known for name in inputs):
        model = onnx.shape_inference.infer_shapes(model)
    graph = Extractor(model).extract_model(inputs, outputs).graph
    graph.name = like.graph.name if like is not None else model.graph.name
    if like is not None:
        types = {v.name: v for v in [*like.graph.input, *like.graph.output]}
        for value in [*graph.input, *graph.output]:
            if value.name in types:
                value.type.CopyFrom(types[value.name].type)
    cut = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    cut.producer_name, cut.producer_version = "lightbsr", __version__
    cut.metadata_props.extend(model.metadata_props)
    return cut


def _check(model: onnx.ModelProto, what: str) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ModelFileError(f"exported {what} graph fails the ONNX checker: {first_line(err)}") from err


def _require_dynamic(model: onnx.ModelProto, what: str) -> None:
    """Every image input and output keeps symbolic batch (and height, width) dims after simplification."""
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        spatial = (0, 2, 3) if len(dims) == 4 else (0,)
        fixed = [i for i in spatial if dims[i].HasField("dim_value")]
        if fixed:
            raise ModelFileError(f"{what} graph: {value.name} lost its dynamic dims {fixed} during export")


def _relative(ours: np.ndarray, ref: np.ndarray) -> float:
    scale = float(np.abs(ref).max())
    return float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max() / (scale or 1.0))


def _verify(model: nn.Module, config: ModelConfig, graphs: dict[str, onnx.ModelProto]) -> dict[str, float]:
    """ORT vs PyTorch at another batch and size than the trace; split composition vs full."""
    from lightbsr.runtime.onnxruntime_backend import run, session

    def ort_session(graph: onnx.ModelProto) -> Any:
        return session(graph.SerializeToString())

    batch, height, width = VERIFY_SIZE
    feeds_t = sample_inputs(model, config, batch, height, width, seed=1)
    with torch.no_grad():
        expected = _SRAndIDR(model)(*feeds_t.values())[0].numpy()
    feeds = {name: value.numpy() for name, value in feeds_t.items()}
    full = run(ort_session(graphs[contract.GRAPH_FULL]), feeds)[0]
    errors = {"full_vs_pytorch": _relative(full, expected)}
    if full.shape != expected.shape or errors["full_vs_pytorch"] > FULL_TOLERANCE:
        raise ModelFileError(
            f"exported graph differs from PyTorch at {batch}×3×{height}×{width}: shape {full.shape} vs "
            f"{expected.shape}, relative error {errors['full_vs_pytorch']:.2e} > {FULL_TOLERANCE:g}"
        )
    if contract.GRAPH_ESTIMATOR in graphs:
        idr_names = contract.idr_names(config.family)
        idr = run(ort_session(graphs[contract.GRAPH_ESTIMATOR]), feeds)
        restorer_feeds = {contract.INPUT_LR: feeds[contract.INPUT_LR], **dict(zip(idr_names, idr, strict=True))}
        composed = run(ort_session(graphs[contract.GRAPH_RESTORER]), restorer_feeds)[0]
        errors["split_vs_full"] = _relative(composed, full)
        if errors["split_vs_full"] > SPLIT_TOLERANCE:
            raise ModelFileError(
                f"split graphs composed differ from the full graph: relative error {errors['split_vs_full']:.2e}"
            )
    return errors


def export_onnx(
    source: str | os.PathLike[str] | nn.Module,
    path: str | os.PathLike[str],
    *,
    config: ModelConfig | None = None,
    split: bool = False,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
    verify: bool = True,
    progress: bool = False,
) -> ExportResult:
    """Export a lightbsr checkpoint (or a model with its ``config``) to ONNX.

    Args:
        source: a lightbsr checkpoint (``.safetensors``) or an ``nn.Module`` (then ``config`` is required).
        path: the ``.onnx`` file of the full graph; with ``split`` the estimator and restorer go
            beside it (:func:`lightbsr.contract.split_paths`).
        config: the model's config when ``source`` is a module; for a checkpoint, the expected
            architecture (a mismatch is a :class:`CheckpointError`).
        opset: ONNX opset, 17–20.
        simplify: run onnxslim (the dynamic dims are checked to survive it).
        verify: run the graphs in ONNX Runtime against PyTorch before writing (module docstring).
        progress: a tqdm bar on stderr.

    Raises:
        CheckpointError: missing, corrupt or wrong-kind checkpoint. ConfigError: bad options.
        ModelFileError: the exported graph fails the checker or the verification (nothing is written).
    """
    if opset not in SUPPORTED_OPSETS:
        raise ConfigError(f"opset {opset} is not supported; choose one of {', '.join(map(str, SUPPORTED_OPSETS))}")
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ConfigError(f"{path}: the output must be an .onnx file")
    seconds: dict[str, float] = {}
    steps = ["load", "trace", *(["simplify"] if simplify else []), "check", *(["verify"] if verify else []), "write"]
    with tqdm(total=len(steps), desc="export", unit="step", disable=not progress) as bar:

        def step(name: str, start: float) -> None:
            seconds[name] = round(time.perf_counter() - start, 3)
            bar.set_postfix_str(name)
            bar.update(1)

        start = time.perf_counter()
        model, config, source_sha = _resolve_source(source, config)
        step("load", start)

        start = time.perf_counter()
        traced = _trace(model, config, opset)
        nodes_exported = len(traced.graph.node)
        step("trace", start)

        nodes_simplified = None
        if simplify:
            start = time.perf_counter()
            traced = _simplify(traced)
            nodes_simplified = len(traced.graph.node)
            step("simplify", start)

        start = time.perf_counter()
        graphs = _cut_graphs(traced, config, split)
        meta = {
            contract.META_ARCH: config.arch,
            contract.META_FAMILY: config.family,
            contract.META_SCALE: str(config.scale),
            contract.META_SETTING: "" if config.setting is None else str(config.setting),
            contract.META_PRECISION: "fp32",
            contract.META_SOURCE_SHA256: source_sha,
            contract.META_VERSION: __version__,
        }
        for graph_name, graph in graphs.items():
            set_metadata(graph, {**meta, contract.META_GRAPH: graph_name})
            _require_dynamic(graph, graph_name)
            _check(graph, graph_name)
        step("check", start)

        verification: dict[str, float] = {}
        if verify:
            start = time.perf_counter()
            verification = _verify(model, config, graphs)
            step("verify", start)

        start = time.perf_counter()
        estimator_path, restorer_path = contract.split_paths(path)
        targets = {
            contract.GRAPH_FULL: path,
            contract.GRAPH_ESTIMATOR: estimator_path,
            contract.GRAPH_RESTORER: restorer_path,
        }
        files = write_graphs({targets[name]: graph for name, graph in graphs.items()})
        if not split:  # split graphs of an earlier export to this name would no longer match it
            estimator_path.unlink(missing_ok=True)
            restorer_path.unlink(missing_ok=True)
        step("write", start)

    return ExportResult(
        config=config,
        opset=opset,
        simplified=simplify,
        source_sha256=source_sha,
        files={name: files[targets[name]] for name in graphs},
        nodes_exported=nodes_exported,
        nodes_simplified=nodes_simplified,
        seconds=seconds,
        verification=verification,
    )


def _cut_graphs(traced: onnx.ModelProto, config: ModelConfig, split: bool) -> dict[str, onnx.ModelProto]:
    inputs = input_names(config)
    idr = list(contract.idr_names(config.family))
    cuts = {contract.GRAPH_FULL: (inputs, [contract.OUTPUT_SR])}
    if split:
        cuts[contract.GRAPH_ESTIMATOR] = (inputs, idr)
        cuts[contract.GRAPH_RESTORER] = ([contract.INPUT_LR, *idr], [contract.OUTPUT_SR])
    graphs = {}
    for name, (ins, outs) in cuts.items():
        graph = cut_graph(traced, ins, outs)
        graph.graph.name = f"{config.arch}_{name}"
        if graph_inputs(graph) != ins:
            raise ModelFileError(f"{name} graph has inputs {graph_inputs(graph)}, expected {ins}")
        graphs[name] = graph
    return graphs


def write_graphs(models: dict[Path, onnx.ModelProto]) -> dict[Path, GraphFile]:
    """Save models atomically and self-contained; either all files appear or none does."""
    files = {}
    with contextlib.ExitStack() as stack:
        for target, model in models.items():
            tmp = stack.enter_context(atomic_output(target))
            onnx.save_model(model, str(tmp), save_as_external_data=False)
            files[target] = GraphFile(
                graph=read_graph_kind(model),
                path=target,
                inputs=graph_inputs(model),
                outputs=[value.name for value in model.graph.output],
                nodes=len(model.graph.node),
                bytes=tmp.stat().st_size,
            )
    return files


def read_graph_kind(model: onnx.ModelProto) -> str:
    return next((p.value for p in model.metadata_props if p.key == contract.META_GRAPH), "")
