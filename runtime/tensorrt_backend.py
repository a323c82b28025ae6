"""TensorRT backend: lightbsr engines on an NVIDIA GPU, or an ONNX model built into cached engines (no torch needed).

Models
    ``model.engine`` (or ``.plan``): the split engines ``model.estimator.engine`` and
    ``model.restorer.engine`` beside it are used when both exist (found by
    :func:`lightbsr.contract.resolve_graphs`, as ``lightbsr build model.estimator.onnx`` names
    them) — which the shared-IDR tiling needs — else ``model.engine`` alone (the full
    graph: whole-image or per-tile estimates only, ``can_split`` is False). Passing a
    split engine's own path works too. ``model.onnx``: its split graphs (else the full
    graph) are built into engines in the engine cache (:class:`lightbsr.tensorrt.engine.EngineCache`,
    ``engine_cache``; default ``$LIGHTBSR_CACHE`` or ``~/.cache/lightbsr/engines``), keyed
    by the ONNX hash, TensorRT version, GPU and build settings, and reused from there;
    the first build prints a message and can take minutes (:mod:`lightbsr.tensorrt.autobuild`).
    Building and loading happen on the CUDA device asked for, made current first.

This module keeps execution only; the engine itself (sidecar, checks, cache, builder, the
TensorRT import probe, logger and loader) is :mod:`lightbsr.tensorrt`, device memory is
:mod:`lightbsr.runtime.device_buffers`.

Checks
    Every engine's JSON sidecar (``model.engine.json``) is checked against this machine
    (:func:`lightbsr.tensorrt.engine.check_engine`: TensorRT version, GPU, engine hash) before it
    is deserialized; a mismatch is one line (:class:`~lightbsr.errors.EngineMismatchError`).
    The sidecar's ONNX metadata says which graph, family and scale the engine holds.
    Without TensorRT or a CUDA device, :func:`load` raises
    :class:`~lightbsr.errors.BackendUnavailableError` before creating any TensorRT object
    (a ``trt.Runtime`` created without CUDA can crash the process later).

Shapes
    Inputs are dynamic per call (``set_input_shape``) within the engine's optimization
    profiles; a call outside them is a :class:`~lightbsr.errors.ConfigError` naming the
    allowed range. Batches larger than the profiles allow are run in chunks, and
    :attr:`TensorRTBackend.max_input_size` tells the tiler the largest tile that fits.
    Engines built from an ONNX get one profile per graph from :class:`EngineShapes`, sized from
    the run's :class:`~lightbsr.runtime.backend.Workload` (:func:`shapes_for`):
    restorer (and full graph) ``lr`` min ``1×3×8×8``, opt = max = ``tile_batch×3×tile×tile``;
    estimator with a shared estimate ``1×3×S×S`` (S: the longest image side, rounded up to a
    power of two so that similar runs share cached engines), else as the restorer.

Precision
    Engines run in the precision they were built with (the sidecar's). From an ONNX:
    ``precision="fp16"`` builds with ``--fp16`` (TensorRT 10: weakly typed FP16; TensorRT 11
    is strongly typed only and refuses it for an fp32 ONNX: convert it with ``lightbsr
    quantize --fp16``); otherwise the ONNX's own precision (FP16 or Q/DQ INT8) is kept.
    Input/output tensors may be float32 or float16 (converted on the host); an INT8 engine
    from ``lightbsr quantize`` keeps float32 I/O. Other I/O types are refused.

Runtimes and buffers
    ``tensorrt`` (full) is preferred; where only ``tensorrt_lean`` or ``tensorrt_dispatch``
    is installed (small deployment runtimes), they run engines whose sidecar says
    ``version_compatible`` (``lightbsr build --version-compatible``) and nothing else; they
    cannot build engines. Device buffers and the CUDA stream come from torch when it is
    installed with CUDA, else from cuda-python (``cudaMalloc``/``cudaMemcpyAsync``/streams);
    ``buffers="torch"`` or ``"cuda-python"`` forces one. Each engine runs with
    ``execute_async_v3`` on that stream, tensors addressed by name (TensorRT 10/11 API).

Not run on real TensorRT where this was written (no GPU there): see docs/tensorrt.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightbsr import contract, cuda
from lightbsr.errors import ConfigError, LightBSRWarning, ModelFileError, first_line
from lightbsr.runtime.backend import IDR, Backend, Workload, model_kind
from lightbsr.runtime.device_buffers import DeviceBuffers, open_buffers
from lightbsr.tensorrt.autobuild import EngineShapes, build_or_reuse, check_precision, engine_shapes
from lightbsr.tensorrt.engine import BuildFunction, EngineCache, EngineSidecar, Shape, ShapeRange, format_shape
from lightbsr.tensorrt.loader import INSTALL, EngineLoader, check_sidecar, require_gpu, require_tensorrt

if TYPE_CHECKING:
    import os

    import tensorrt as trt

__all__ = ["EngineShapes", "TensorRTBackend", "build_or_reuse", "choose_profile", "engine_shapes", "load", "shapes_for"]

NEEDS = "the TensorRT backend needs TensorRT and an NVIDIA GPU"
_NUMPY_TYPES: dict[str, np.dtype[Any]] = {"FLOAT": np.dtype(np.float32), "HALF": np.dtype(np.float16)}
_OOM_MESSAGES = ("out of memory", "outofmemory", "failed to allocate", "cudaerrormemoryallocation")


# --------------------------------------------------------------------------- devices


def parse_device(device: str) -> int:
    """``auto``/``cuda`` → 0, ``cuda:N`` → N; the CPU and anything else are ConfigErrors."""
    if device in ("auto", "cuda"):
        return 0
    prefix, _, index = device.partition(":")
    if prefix == "cuda" and index.isdigit():
        return int(index)
    if device == "cpu":
        raise ConfigError("the tensorrt backend runs on NVIDIA GPUs only; on the CPU use --backend onnxruntime")
    raise ConfigError(f"unsupported device {device!r}; use cuda, cuda:N or auto")


# --------------------------------------------------------------------------- shapes


def _dims(dims: Any) -> Shape:
    """A TensorRT ``Dims`` (or any sequence) as a tuple of ints."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def _within(shape: Shape, shapes: ShapeRange) -> bool:
    return len(shape) == len(shapes.min) and all(
        lo <= d <= hi for d, lo, hi in zip(shape, shapes.min, shapes.max, strict=True)
    )


def _range_text(shapes: ShapeRange) -> str:
    return f"{format_shape(shapes.min)} … {format_shape(shapes.max)}"


def choose_profile(profiles: Sequence[Mapping[str, ShapeRange]], shapes: Mapping[str, Shape], engine: str) -> int:
    """Index of the first optimization profile that takes every input shape, or a ConfigError naming the ranges."""
    for index, profile in enumerate(profiles):
        if all(_within(shapes[name], ranges) for name, ranges in profile.items()):
            return index
    lr = shapes[contract.INPUT_LR]
    lr_fits = [p for p in profiles if _within(lr, p[contract.INPUT_LR])]
    if lr_fits:  # lr fits, another input does not (an IDR of the wrong size)
        name, ranges = next((n, r) for n, r in lr_fits[0].items() if not _within(shapes[n], r))
        raise ConfigError(
            f"{engine}: input {name} of shape {format_shape(shapes[name])} is outside the engine's range "
            f"{_range_text(ranges)} for lr {format_shape(lr)}"
        )
    allowed = "; ".join(_range_text(p[contract.INPUT_LR]) for p in profiles)
    plural = "s" if len(profiles) > 1 else ""
    raise ConfigError(
        f"{engine}: lr of shape {format_shape(lr)} is outside the engine's shape range{plural} {allowed}; "
        "keep tiles within it (--tile) or rebuild the engine with a wider --min-shape/--max-shape"
    )


def _largest_square(profiles: Sequence[Mapping[str, ShapeRange]]) -> tuple[int, int]:
    """(height, width) of the profile whose largest ``lr`` allows the largest square tile."""
    sizes = [p[contract.INPUT_LR].max[2:4] for p in profiles]
    height, width = max(sizes, key=lambda hw: (min(hw), hw[0] * hw[1]))
    return int(height), int(width)


def shapes_for(workload: Workload) -> EngineShapes:
    """The :class:`EngineShapes` a run with this :class:`~lightbsr.runtime.backend.Workload` needs."""
    return engine_shapes(
        workload.image_sizes, tile=workload.tile, tile_batch=workload.tile_batch, shared_idr=workload.shared_idr
    )


# --------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: np.dtype
    shape: Shape  # -1 where dynamic


class _Engine:
    """One deserialized lightbsr engine, its execution context and I/O, run on the backend's buffers and stream."""

    def __init__(self, path: Path, graph: str, sidecar: EngineSidecar, loader: EngineLoader, buffers: DeviceBuffers):
        self.path, self.graph, self.sidecar, self.buffers = path, graph, sidecar, buffers
        self._error = loader.last_error.take
        family = sidecar.onnx_metadata[contract.META_FAMILY]  # checked by load()
        self.engine: trt.ICudaEngine = loader.load(path, sidecar)
        engine = self.engine
        tensors: dict[str, _Tensor] = {}
        inputs = []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            kind = engine.get_tensor_dtype(name).name
            if kind not in _NUMPY_TYPES:
                raise ModelFileError(
                    f"{path}: tensor {name} is {kind}; lightbsr engines take float32 or float16 tensors (INT8 "
                    "precision stays inside the engine: build it from the `lightbsr quantize` ONNX, whose I/O is float)"
                )
            layout = engine.get_tensor_format(name).name
            if layout != "LINEAR":
                raise ModelFileError(f"{path}: tensor {name} has the {layout} layout; lightbsr expects LINEAR (NCHW)")
            tensors[name] = _Tensor(name, _NUMPY_TYPES[kind], _dims(engine.get_tensor_shape(name)))
            if engine.get_tensor_mode(name).name == "INPUT":
                inputs.append(name)
        outputs = [name for name in tensors if name not in inputs]
        contract.check_io(path, graph, family, inputs, outputs)
        expected_in, expected_out = contract.graph_io(graph, family)
        self.inputs = {name: tensors[name] for name in expected_in}
        self.outputs = {name: tensors[name] for name in expected_out}
        self.profiles = [self._profile(index) for index in range(engine.num_optimization_profiles)]
        context = engine.create_execution_context()
        if context is None:
            reason = self._error("out of memory?")
            raise MemoryError(f"{path}: TensorRT could not create an execution context: {reason}")
        self.context: trt.IExecutionContext = context
        self._active_profile = 0

    def _profile(self, index: int) -> dict[str, ShapeRange]:
        ranges = {}
        for name, tensor in self.inputs.items():
            if -1 in tensor.shape:
                ranges[name] = ShapeRange(*(_dims(d) for d in self.engine.get_tensor_profile_shape(name, index)))
            else:
                ranges[name] = ShapeRange(tensor.shape, tensor.shape, tensor.shape)
        return ranges

    @property
    def max_batch(self) -> int:
        return max(p[contract.INPUT_LR].max[0] for p in self.profiles)

    @property
    def max_input_size(self) -> tuple[int, int]:
        return _largest_square(self.profiles)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs by name → float32 outputs by name; batches beyond the profiles' largest run in chunks."""
        batch, step = len(feeds[contract.INPUT_LR]), self.max_batch
        if batch <= step:
            return self._run(feeds)
        parts = [self._run({n: v[i : i + step] for n, v in feeds.items()}) for i in range(0, batch, step)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.outputs}

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [name for name in self.inputs if name not in feeds]
        if missing:
            raise ConfigError(f"{self.path}: missing input(s) {', '.join(missing)}")
        shapes = {name: tuple(int(d) for d in np.shape(feeds[name])) for name in self.inputs}
        profile = choose_profile(self.profiles, shapes, str(self.path))
        context, buffers = self.context, self.buffers
        stream = buffers.stream
        keep: list[np.ndarray] = []  # host arrays stay alive until the stream is synchronized
        results: dict[str, np.ndarray] = {}
        try:
            if profile != self._active_profile:
                try:  # the bindings raise (they do not return False) when TensorRT refuses
                    selected, problem = context.set_optimization_profile_async(profile, stream), "no reason given"
                except RuntimeError as err:
                    selected, problem = False, first_line(err)
                if not selected:
                    raise RuntimeError(f"{self.path}: cannot select profile {profile}: {self._error(problem)}")
                self._active_profile = profile
            for name, tensor in self.inputs.items():
                host = np.ascontiguousarray(feeds[name], dtype=tensor.dtype)
                if not host.flags.writeable:
                    host = host.copy()
                if not context.set_input_shape(name, host.shape):
                    raise ConfigError(
                        f"{self.path}: TensorRT refused {name} of shape {format_shape(host.shape)}: "
                        f"{self._error('outside the engine profile')}"
                    )
                pointer = buffers.slot(f"{self.graph}:{name}", host.nbytes)
                buffers.upload(pointer, host)
                keep.append(host)
                if not context.set_tensor_address(name, pointer):
                    raise RuntimeError(f"{self.path}: cannot bind {name}: {self._error('no reason given')}")
            pointers = {}
            for name, tensor in self.outputs.items():
                shape = _dims(context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"{self.path}: TensorRT could not infer the shape of {name} ({shape})")
                results[name] = np.empty(shape, dtype=tensor.dtype)
                pointers[name] = buffers.slot(f"{self.graph}:{name}", results[name].nbytes)
                if not context.set_tensor_address(name, pointers[name]):
                    raise RuntimeError(f"{self.path}: cannot bind {name}: {self._error('no reason given')}")
            if not context.execute_async_v3(stream):
                raise RuntimeError(f"{self.path}: TensorRT could not run it: {self._error('no reason given')}")
            for name, out in results.items():
                buffers.download(pointers[name], out)
        finally:
            buffers.synchronize()
        return {name: out.astype(np.float32, copy=False) for name, out in results.items()}


# --------------------------------------------------------------------------- backend


class TensorRTBackend(Backend):
    """Split (estimator + restorer) or full lightbsr TensorRT engines on one GPU."""

    name = "tensorrt"

    def __init__(
        self,
        engines: Mapping[str, Path],
        sidecars: Mapping[str, EngineSidecar],
        *,
        loader: EngineLoader,
        device_index: int,
        buffers: DeviceBuffers,
        built: Sequence[Path] = (),
    ) -> None:
        self.loader, self.buffers, self.built = loader, buffers, list(built)
        self.tensorrt, self.gpu = loader.tensorrt, loader.gpu
        self.device = f"cuda:{device_index}"
        opened = {graph: _Engine(path, graph, sidecars[graph], loader, buffers) for graph, path in engines.items()}
        self.estimator = opened.get(contract.GRAPH_ESTIMATOR)
        self.restorer = opened.get(contract.GRAPH_RESTORER)
        self.full = opened.get(contract.GRAPH_FULL)
        self.engines = list(opened.values())
        main = self.full or self.restorer or self.engines[0]
        self.family, self.scale = contract.check_metadata(main.path, main.graph, main.sidecar.onnx_metadata, "engine")
        self.precision = main.sidecar.precision  # the restorer's: split INT8 models may keep a float estimator

    @property
    def can_split(self) -> bool:
        return self.estimator is not None

    @property
    def max_input_size(self) -> tuple[int, int] | None:
        sizes = [engine.max_input_size for engine in self.engines]
        return min(h for h, _ in sizes), min(w for _, w in sizes)

    def _require_split(self) -> tuple[_Engine, _Engine]:
        if self.estimator is None or self.restorer is None:
            raise ModelFileError(
                f"{self.engines[0].path} has no split engines beside it ({contract.GRAPH_ESTIMATOR}/"
                f"{contract.GRAPH_RESTORER} .engine): a shared degradation estimate needs them; build them from the "
                "split ONNX graphs, or use per-tile estimates (--no-shared-idr)"
            )
        return self.estimator, self.restorer

    def estimate(self, lr: np.ndarray) -> IDR:
        estimator, _ = self._require_split()
        return estimator.run({contract.INPUT_LR: lr})

    def restore(self, lr: np.ndarray, idr: IDR) -> np.ndarray:
        _, restorer = self._require_split()
        feeds = {contract.INPUT_LR: lr, **{name: idr[name] for name in contract.idr_names(self.family)}}
        return restorer.run(feeds)[contract.OUTPUT_SR]

    def forward(self, lr: np.ndarray) -> np.ndarray:
        if self.full is not None:
            return self.full.run({contract.INPUT_LR: lr})[contract.OUTPUT_SR]
        return super().forward(lr)

    def free_memory(self) -> int | None:
        return self.buffers.free_memory()

    def is_out_of_memory(self, err: BaseException) -> bool:
        return isinstance(err, MemoryError) or any(m in str(err).lower() for m in _OOM_MESSAGES)

    def release_memory(self) -> None:
        self.buffers.release()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "tensorrt": f"{self.tensorrt.name} {self.tensorrt.version}",
            "gpu": self.gpu.name,
            "buffers": self.buffers.kind,
            "engines": {engine.graph: str(engine.path) for engine in self.engines},
            "engine_precisions": {engine.graph: engine.sidecar.precision for engine in self.engines},
            "built": [str(path) for path in self.built],
            "max_input_size": list(self.max_input_size or ()),
        }


def load(
    model_path: str | os.PathLike[str],
    *,
    device: str = "auto",
    precision: str | None = None,
    workload: Workload | None = None,
    engine_cache: str | os.PathLike[str] | None = None,
    engine_shapes: EngineShapes | None = None,
    buffers: str | DeviceBuffers = "auto",
    builder: BuildFunction | None = None,
    **options: Any,
) -> TensorRTBackend:
    """A TensorRT backend for ``model.engine`` (split engines beside it preferred) or ``model.onnx`` (built, cached).

    ``engine_cache``/``engine_shapes``/``builder`` apply to ONNX models: the cache folder,
    the sizes the engines must take (default: from ``workload``, the images and tiling of the
    run, see :func:`shapes_for`) and the function that builds one engine. ``buffers``:
    ``"auto"``, ``"torch"``, ``"cuda-python"`` or a :class:`DeviceBuffers`.
    """
    if options:
        known = "engine_cache, engine_shapes, buffers, builder"
        raise ConfigError(f"unknown tensorrt backend option(s) {', '.join(sorted(options))}; known: {known}")
    if precision == "bf16":
        raise ConfigError("the tensorrt backend does not run bf16; use fp32/fp16 engines, or the torch backend")
    path = Path(model_path)
    from_onnx = model_kind(path) == "onnxruntime"  # an ONNX model: engines built from it
    if not from_onnx and (engine_cache is not None or engine_shapes is not None or builder is not None):
        raise ConfigError("the engine cache, engine shapes and builder apply to ONNX models, not to prebuilt engines")
    device_index = parse_device(device)
    # before any TensorRT object is created (a trt.Runtime created without CUDA can crash the process later)
    tensorrt = require_tensorrt(missing=f"{NEEDS}; found: no tensorrt module ({INSTALL})")
    gpu = require_gpu(
        device_index, missing=f"{NEEDS}; found: {tensorrt.name} {tensorrt.version} but no CUDA device {device_index}"
    )
    cuda.select_device(device_index)  # first: TensorRT builds, tunes and loads on the current device
    built: list[Path] = []
    if from_onnx:
        shapes = engine_shapes or shapes_for(workload or Workload())
        cache = EngineCache(engine_cache)
        engines, built = build_or_reuse(
            path, shapes=shapes, fp16=precision == "fp16", cache=cache, tensorrt=tensorrt, gpu=gpu, builder=builder,
            precision=precision, device=device_index,
        )  # fmt: skip
    else:
        engines = contract.resolve_graphs(path).present("engine")
    sidecars = {}
    for graph, engine in engines.items():
        sidecar, notes = check_sidecar(engine, tensorrt, gpu)
        for note in notes:
            warnings.warn(note, LightBSRWarning, stacklevel=2)
        contract.check_metadata(engine, graph, sidecar.onnx_metadata, "engine")
        sidecars[graph] = sidecar
    _check_same_model(engines, sidecars)
    main = contract.GRAPH_FULL if contract.GRAPH_FULL in engines else contract.GRAPH_RESTORER
    if not from_onnx:
        check_precision(precision, sidecars[main].precision, f"{engines[main]} ({sidecars[main].precision} engine)")
    memory = open_buffers(buffers, device_index)
    return TensorRTBackend(
        engines, sidecars, loader=EngineLoader(tensorrt, gpu), device_index=device_index, buffers=memory, built=built
    )


def _check_same_model(engines: Mapping[str, Path], sidecars: Mapping[str, EngineSidecar]) -> None:
    fields = (contract.META_FAMILY, contract.META_SCALE, contract.META_SOURCE_SHA256)
    keys = {tuple(s.onnx_metadata.get(k, "") for k in fields) for s in sidecars.values()}
    if len(keys) > 1:
        raise ModelFileError(f"{' and '.join(map(str, engines.values()))} were not built from the same model")
