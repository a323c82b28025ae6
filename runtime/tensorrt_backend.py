"""TensorRT backend: lightbsr engines on an NVIDIA GPU, or an ONNX model built into cached engines (no torch needed).

Models
    ``model.engine`` (or ``.plan``): the split engines ``model.estimator.engine`` and
    ``model.restorer.engine`` beside it are used when both exist (names from
    :func:`lightbsr.contract.split_paths`, as ``lightbsr build model.estimator.onnx`` writes
    them) — which the shared-IDR tiling needs — else ``model.engine`` alone (the full
    graph: whole-image or per-tile estimates only, ``can_split`` is False). Passing a
    split engine's own path works too. ``model.onnx``: its split graphs (else the full
    graph) are built into engines in the engine cache (:class:`lightbsr.engine.EngineCache`,
    ``engine_cache``; default ``$LIGHTBSR_CACHE`` or ``~/.cache/lightbsr/engines``), keyed
    by the ONNX hash, TensorRT version, GPU and build settings, and reused from there;
    the first build prints a message and can take minutes.

Checks
    Every engine's JSON sidecar (``model.engine.json``) is checked against this machine
    (:func:`lightbsr.engine.check_engine`: TensorRT version, GPU, engine hash) before it
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
    Engines built from an ONNX get one profile per graph from :class:`EngineShapes`:
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

import abc
import importlib
import math
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lightbsr import contract
from lightbsr.engine import (
    BuildFunction,
    BuildSettings,
    EngineCache,
    EngineSidecar,
    GpuInfo,
    Shape,
    ShapeRange,
    check_engine,
    detect_gpu,
    format_shape,
)
from lightbsr.errors import BackendUnavailableError, ConfigError, EngineMismatchError, ModelFileError
from lightbsr.runtime.backend import IDR, Backend, split_model_paths

if TYPE_CHECKING:
    import os

    import tensorrt as trt

__all__ = [
    "RUNTIME_MODULES",
    "CudaPythonBuffers",
    "DeviceBuffers",
    "EngineShapes",
    "TensorRTBackend",
    "TensorRTModule",
    "TorchBuffers",
    "build_or_reuse",
    "choose_profile",
    "engine_shapes",
    "import_tensorrt",
    "load",
    "open_buffers",
]

RUNTIME_MODULES = ("tensorrt", "tensorrt_lean", "tensorrt_dispatch")
"""TensorRT Python modules, in order of preference: the full one, then the lean and dispatch runtimes."""

NEEDS = "the TensorRT backend needs TensorRT and an NVIDIA GPU"
MIN_SIDE = 8
"""Smallest LR height/width of the profiles of engines built from an ONNX."""
DEFAULT_TILE = 512
"""Tile side (LR pixels) of engines built from an ONNX when no tile is given."""
DEFAULT_IMAGE_SIDE = 1024
"""Longest image side (LR pixels) the estimator engine takes when the images are not known in advance."""
BUFFERS = ("auto", "torch", "cuda-python")
_NUMPY_TYPES: dict[str, np.dtype[Any]] = {"FLOAT": np.dtype(np.float32), "HALF": np.dtype(np.float16)}
_OOM_MESSAGES = ("out of memory", "outofmemory", "failed to allocate", "cudaerrormemoryallocation")


# --------------------------------------------------------------------------- TensorRT and the GPU


@dataclass(frozen=True)
class TensorRTModule:
    """The TensorRT Python module in use: ``tensorrt``, ``tensorrt_lean`` or ``tensorrt_dispatch``."""

    module: Any
    name: str
    version: str

    @property
    def lean(self) -> bool:
        """A lean or dispatch runtime: runs version-compatible engines only, builds nothing."""
        return self.name != "tensorrt"


def import_tensorrt() -> TensorRTModule | None:
    """The first usable module of :data:`RUNTIME_MODULES`, or None.

    ``tensorrt-stubs`` alone leaves an empty ``tensorrt`` namespace package, so a module
    counts only with a ``Runtime`` and a version.
    """
    for name in RUNTIME_MODULES:
        try:
            module = importlib.import_module(name)
        except (ImportError, OSError):  # OSError: the wheel is there, its shared libraries are not
            continue
        version = getattr(module, "__version__", None)
        if isinstance(version, str) and hasattr(module, "Runtime"):
            return TensorRTModule(module, name, version)
    return None


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


def require_tensorrt_and_gpu(device_index: int) -> tuple[TensorRTModule, GpuInfo]:
    """The TensorRT module and the GPU, or BackendUnavailableError saying which is missing (one line)."""
    found = import_tensorrt()
    if found is None:
        raise BackendUnavailableError(
            f"{NEEDS}; found: no tensorrt module (pip install lightbsr[trt], or JetPack's python3-libnvinfer)"
        )
    gpu = detect_gpu(device_index)
    if gpu is None:
        raise BackendUnavailableError(f"{NEEDS}; found: {found.name} {found.version} but no CUDA device {device_index}")
    return found, gpu


# --------------------------------------------------------------------------- device buffers


class DeviceBuffers(abc.ABC):
    """Device memory and one CUDA stream. Each tensor keeps a buffer (:meth:`slot`) that grows as needed.

    Subclasses provide the primitives; all copies are asynchronous on :attr:`stream`
    until :meth:`synchronize`. Host arrays must be C-contiguous.
    """

    kind: ClassVar[str]

    def __init__(self) -> None:
        self._slots: dict[str, tuple[int, int]] = {}  # key → (pointer, capacity in bytes)

    @property
    @abc.abstractmethod
    def stream(self) -> int:
        """The CUDA stream handle ``execute_async_v3`` is given."""

    @abc.abstractmethod
    def allocate(self, nbytes: int) -> int:
        """Device memory of ``nbytes`` bytes → its address (MemoryError when out of memory)."""

    @abc.abstractmethod
    def free(self, pointer: int) -> None: ...

    @abc.abstractmethod
    def upload(self, pointer: int, array: np.ndarray) -> None:
        """Copy ``array``'s bytes to ``pointer`` (asynchronously on the stream)."""

    @abc.abstractmethod
    def download(self, pointer: int, out: np.ndarray) -> None:
        """Copy ``out.nbytes`` bytes from ``pointer`` into ``out`` (asynchronously on the stream)."""

    @abc.abstractmethod
    def synchronize(self) -> None:
        """Wait for everything queued on the stream."""

    def free_memory(self) -> int | None:
        """Bytes free on the device, or None if unknown."""
        return None

    def slot(self, key: str, nbytes: int) -> int:
        """A buffer of at least ``nbytes`` for ``key``, reused across calls (reallocated when too small)."""
        pointer, capacity = self._slots.get(key, (0, 0))
        if capacity >= nbytes > 0:
            return pointer
        if capacity:
            del self._slots[key]
            self.free(pointer)
        size = max(nbytes, 1)
        pointer = self.allocate(size)
        self._slots[key] = (pointer, size)
        return pointer

    def release(self) -> None:
        """Free every buffer (after an out-of-memory error; the next call allocates again)."""
        self.synchronize()
        slots, self._slots = self._slots, {}
        for pointer, _ in slots.values():
            self.free(pointer)


def _byte_view(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1).view(np.uint8)


class TorchBuffers(DeviceBuffers):
    """Buffers from torch's caching allocator, on a stream of its own (preferred where torch has CUDA)."""

    kind = "torch"

    def __init__(self, device_index: int) -> None:
        super().__init__()
        import torch

        self._torch = torch
        self._device = torch.device("cuda", device_index)
        torch.cuda.set_device(self._device)  # TensorRT runs on the current device
        self._stream = torch.cuda.Stream(self._device)
        self._blocks: dict[int, Any] = {}

    @property
    def stream(self) -> int:
        return int(self._stream.cuda_stream)

    def allocate(self, nbytes: int) -> int:
        with self._torch.cuda.stream(self._stream):  # the block then belongs to our stream
            block = self._torch.empty(nbytes, dtype=self._torch.uint8, device=self._device)
        pointer = int(block.data_ptr())
        self._blocks[pointer] = block
        return pointer

    def free(self, pointer: int) -> None:
        self._blocks.pop(pointer, None)

    def upload(self, pointer: int, array: np.ndarray) -> None:
        host = self._torch.from_numpy(_byte_view(array))
        with self._torch.cuda.stream(self._stream):
            self._blocks[pointer][: host.numel()].copy_(host, non_blocking=True)

    def download(self, pointer: int, out: np.ndarray) -> None:
        host = self._torch.from_numpy(_byte_view(out))
        with self._torch.cuda.stream(self._stream):
            host.copy_(self._blocks[pointer][: host.numel()], non_blocking=True)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def free_memory(self) -> int | None:
        cuda = self._torch.cuda
        free, _ = cuda.mem_get_info(self._device)
        cached = cuda.memory_reserved(self._device) - cuda.memory_allocated(self._device)
        return int(free + cached)

    def release(self) -> None:
        super().release()
        self._torch.cuda.empty_cache()


def _import_cudart() -> Any | None:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python ≥ 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            return None
    return cudart


class CudaPythonBuffers(DeviceBuffers):
    """Buffers from ``cudaMalloc`` and a ``cudaStreamCreate`` stream, through cuda-python (no torch needed)."""

    kind = "cuda-python"

    def __init__(self, device_index: int) -> None:
        super().__init__()
        cudart = _import_cudart()
        if cudart is None:
            raise BackendUnavailableError("cuda-python is not installed (pip install cuda-python)")
        self._cudart = cudart
        self._call("cudaSetDevice", device_index)  # TensorRT runs on the current device
        self._stream = self._call("cudaStreamCreate")

    def _call(self, function: str, *args: Any) -> Any:
        """``cudart.<function>(*args)`` with its error code checked; returns the other result (or None)."""
        result = getattr(self._cudart, function)(*args)
        err, *values = result if isinstance(result, tuple) else (result,)
        code = int(err)
        if code != 0:
            _, name = self._cudart.cudaGetErrorName(err)
            name = name.decode() if isinstance(name, bytes) else str(name)
            if code == int(self._cudart.cudaError_t.cudaErrorMemoryAllocation):
                raise MemoryError(f"{function}: CUDA out of memory ({name})")
            raise RuntimeError(f"{function} failed: CUDA error {code} ({name})")
        return values[0] if len(values) == 1 else None

    @property
    def stream(self) -> int:
        return int(self._stream)

    def allocate(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", nbytes))

    def free(self, pointer: int) -> None:
        self._call("cudaFree", pointer)

    def upload(self, pointer: int, array: np.ndarray) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", pointer, array.ctypes.data, array.nbytes, kind, self._stream)

    def download(self, pointer: int, out: np.ndarray) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", out.ctypes.data, pointer, out.nbytes, kind, self._stream)

    def synchronize(self) -> None:
        self._call("cudaStreamSynchronize", self._stream)

    def free_memory(self) -> int | None:
        result = self._cudart.cudaMemGetInfo()
        return int(result[1]) if int(result[0]) == 0 else None


def _cuda_torch() -> Any | None:
    """torch, if it is installed with a usable CUDA device; else None."""
    try:
        import torch
    except ImportError:
        return None
    try:
        return torch if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA setup only means: no torch buffers
        return None


def open_buffers(buffers: str | DeviceBuffers, device_index: int) -> DeviceBuffers:
    """Device buffers: ``"auto"`` (torch with CUDA, else cuda-python), ``"torch"``, ``"cuda-python"`` or ready ones."""
    if isinstance(buffers, DeviceBuffers):
        return buffers
    if buffers not in BUFFERS:
        raise ConfigError(f"unknown buffers {buffers!r}; choose from {', '.join(BUFFERS)}")
    if buffers in ("auto", "torch"):
        if _cuda_torch() is not None:
            return TorchBuffers(device_index)
        if buffers == "torch":
            raise BackendUnavailableError("buffers='torch' needs torch built with CUDA and a CUDA device")
    if _import_cudart() is None:
        raise BackendUnavailableError(
            f"{NEEDS}, and torch with CUDA or cuda-python for device buffers; found neither (pip install cuda-python)"
        )
    return CudaPythonBuffers(device_index)


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


def _round_up(side: int) -> int:
    """The next power of two ≥ ``side`` (at least 64): similar image sizes share one engine."""
    return max(64, 1 << math.ceil(math.log2(max(side, 1))))


@dataclass(frozen=True)
class EngineShapes:
    """The LR sizes engines built from an ONNX must take, and the profile of each graph that follows.

    ``image``: the longest image side the estimator sees in one go (a shared estimate);
    ``tile``/``batch``: the restorer's tile side and tiles per call (the tiler never asks for
    more: :attr:`TensorRTBackend.max_input_size`); ``shared_idr``: whether the estimator
    runs on whole images (else on tile batches, like the restorer).
    """

    image: int = DEFAULT_IMAGE_SIDE
    tile: int = DEFAULT_TILE
    batch: int = 1
    shared_idr: bool = True

    def __post_init__(self) -> None:
        for name in ("image", "tile"):
            if getattr(self, name) < MIN_SIDE:
                raise ConfigError(f"engine {name} side must be at least {MIN_SIDE}, got {getattr(self, name)}")
        if self.batch < 1:
            raise ConfigError(f"engine batch must be at least 1, got {self.batch}")

    def lr_range(self, graph: str) -> ShapeRange:
        """The ``lr`` min/opt/max of ``graph``'s single optimization profile (the other inputs follow from it)."""
        low = (1, 3, MIN_SIDE, MIN_SIDE)
        if graph == contract.GRAPH_ESTIMATOR and self.shared_idr:
            whole = (1, 3, self.image, self.image)
            return ShapeRange(low, whole, whole)
        tiles = (self.batch, 3, self.tile, self.tile)
        return ShapeRange(low, tiles, tiles)


def engine_shapes(
    image_sizes: Iterable[tuple[int, int]],
    *,
    tile: int | None = None,
    tile_batch: int = 1,
    shared_idr: bool = True,
) -> EngineShapes:
    """:class:`EngineShapes` for these LR image sizes ``(height, width)`` and tiling options.

    The longest side is rounded up to a power of two (≥ 64), so that runs on similar
    images reuse the cached engines; ``tile=None``: :data:`DEFAULT_TILE`; ``tile=0``
    (never tile): whole images, one at a time. The tile never exceeds the image side.
    """
    longest = max((max(int(h), int(w)) for h, w in image_sizes), default=DEFAULT_IMAGE_SIDE)
    image = _round_up(longest)
    if tile == 0:
        return EngineShapes(image, image, 1, shared_idr)
    side = DEFAULT_TILE if tile is None else max(tile, MIN_SIDE)
    return EngineShapes(image, min(side, image), tile_batch, shared_idr)


# --------------------------------------------------------------------------- building


def _check_precision(requested: str | None, actual: str, what: str) -> None:
    if requested is None or requested == actual or (requested == "fp16" and actual == "int8"):
        return
    raise ConfigError(
        f"{what} is {actual}; the tensorrt backend runs engines in the precision they were built with "
        f"(for {requested}: build from an ONNX with{'' if requested == 'fp16' else 'out'} --fp16, or "
        "convert it with `lightbsr quantize`)"
    )


def _default_builder(onnx: Path, engine: Path, settings: BuildSettings) -> EngineSidecar:
    # The one place the runtime imports the export stage: building an engine needs the TensorRT
    # builder of lightbsr.export.tensorrt (torch-free), and only when an ONNX model is given.
    from lightbsr.export.tensorrt.builder import build_engine

    return build_engine(onnx, engine, settings)


def build_or_reuse(
    onnx_path: str | os.PathLike[str],
    *,
    shapes: EngineShapes,
    fp16: bool,
    cache: EngineCache,
    tensorrt: TensorRTModule,
    gpu: GpuInfo,
    builder: BuildFunction | None = None,
    report: Callable[[str], None] | None = None,
    precision: str | None = None,
) -> tuple[dict[str, Path], list[Path]]:
    """Engines for an ONNX model's split graphs (else its full graph), from ``cache``, built where missing.

    Returns ({graph: engine path}, engines built by this call). ``builder`` builds one
    engine (default: :func:`lightbsr.export.tensorrt.builder.build_engine`); ``report`` gets
    the message shown before each (slow) build. A flag the installed TensorRT cannot honour
    (``fp16`` on TensorRT 11 with an fp32 ONNX) is a ConfigError before anything is built.
    """
    if tensorrt.lean:
        raise BackendUnavailableError(
            f"building engines needs the full tensorrt package; {tensorrt.name} only runs prebuilt "
            "version-compatible engines (lightbsr build --version-compatible)"
        )
    # Sanctioned exception to "runtime never imports export" (see _default_builder): the build plan
    # and ONNX reader of lightbsr.export.tensorrt are torch-free and only needed on this path.
    from lightbsr.export.tensorrt.onnx_info import read_onnx_info
    from lightbsr.export.tensorrt.plan import plan_build

    full, estimator, restorer = split_model_paths(onnx_path)
    if estimator.is_file() and restorer.is_file():
        graphs = {contract.GRAPH_ESTIMATOR: estimator, contract.GRAPH_RESTORER: restorer}
    elif full.is_file():
        graphs = {contract.GRAPH_FULL: full}
    else:
        raise ModelFileError(
            f"{onnx_path}: no such model (looked for {full.name}, or {estimator.name} + {restorer.name})"
        )
    build = builder or _default_builder
    say = report or (lambda text: print(f"lightbsr: {text}", file=sys.stderr, flush=True))
    built: list[Path] = []
    engines: dict[str, Path] = {}
    for graph, path in graphs.items():
        settings = BuildSettings(profiles=(shapes.lr_range(graph),), fp16=fp16)
        info = read_onnx_info(path)
        plan = plan_build(tensorrt.version, settings, info.precision, info.uint8_qdq)
        _check_precision(precision, plan.precision, f"{path} ({info.precision} ONNX)")

        def build_one(onnx: Path, engine: Path, wanted: BuildSettings) -> EngineSidecar:
            say(f"building the TensorRT engine for {onnx.name} (first use: this can take minutes) → {engine}")
            sidecar = build(onnx, engine, wanted)
            built.append(engine)
            return sidecar

        engines[graph] = cache.get_or_build(path, settings, tensorrt_version=tensorrt.version, gpu=gpu, build=build_one)
    return engines, built


# --------------------------------------------------------------------------- engines


def engine_files(path: str | os.PathLike[str]) -> dict[str, Path]:
    """{graph: engine path}: the split engines beside ``path`` when both exist, else the full one."""
    full, estimator, restorer = split_model_paths(path)
    if estimator.is_file() and restorer.is_file():
        return {contract.GRAPH_ESTIMATOR: estimator, contract.GRAPH_RESTORER: restorer}
    if full.is_file():
        return {contract.GRAPH_FULL: full}
    raise ModelFileError(f"{path}: no such engine (looked for {full.name}, or {estimator.name} + {restorer.name})")


@dataclass
class _LastError:
    text: str = ""


def _make_logger(tensorrt: TensorRTModule, last_error: _LastError) -> trt.ILogger:
    """A TensorRT logger: warnings and errors to stderr, the last error kept for the one-line message."""
    module = tensorrt.module
    lock = threading.Lock()

    def __init__(self: Any) -> None:
        module.ILogger.__init__(self)

    def log(self: Any, severity: Any, msg: str) -> None:
        with lock:  # TensorRT may log from several threads
            if severity <= module.ILogger.Severity.ERROR:
                last_error.text = " ".join(msg.split())
            if severity <= module.ILogger.Severity.WARNING:
                print(f"[TensorRT] {severity.name}: {msg}", file=sys.stderr)

    # the base class is the ILogger of whichever module is in use (tensorrt, tensorrt_lean, tensorrt_dispatch)
    logger: trt.ILogger = type("Logger", (module.ILogger,), {"__init__": __init__, "log": log})()
    return logger


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: np.dtype
    shape: Shape  # -1 where dynamic


class _Engine:
    """One deserialized lightbsr engine, its execution context and I/O, run on the backend's buffers and stream."""

    def __init__(
        self,
        path: Path,
        graph: str,
        sidecar: EngineSidecar,
        runtime: trt.Runtime,
        buffers: DeviceBuffers,
        last_error: _LastError,
    ) -> None:
        self.path, self.graph, self.sidecar = path, graph, sidecar
        self.buffers, self._last_error = buffers, last_error
        family = sidecar.onnx_metadata.get(contract.META_FAMILY, "")
        if sidecar.version_compatible:
            runtime.engine_host_code_allowed = True  # a version-compatible plan embeds its lean runtime
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise EngineMismatchError(f"{path}: TensorRT could not load it: {self._error('no reason given')}")
        self.engine: trt.ICudaEngine = engine
        inputs: dict[str, _Tensor] = {}
        outputs: dict[str, _Tensor] = {}
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
            tensor = _Tensor(name, _NUMPY_TYPES[kind], _dims(engine.get_tensor_shape(name)))
            (inputs if engine.get_tensor_mode(name).name == "INPUT" else outputs)[name] = tensor
        idr = contract.idr_names(family)
        expected_in, expected_out = {
            contract.GRAPH_FULL: ((contract.INPUT_LR,), (contract.OUTPUT_SR,)),
            contract.GRAPH_ESTIMATOR: ((contract.INPUT_LR,), idr),
            contract.GRAPH_RESTORER: ((contract.INPUT_LR, *idr), (contract.OUTPUT_SR,)),
        }[graph]
        if set(inputs) != set(expected_in) or set(outputs) != set(expected_out):
            raise ModelFileError(
                f"{path}: tensors {sorted(inputs)} → {sorted(outputs)} do not match the lightbsr {graph} graph "
                f"({list(expected_in)} → {list(expected_out)})"
            )
        self.inputs = {name: inputs[name] for name in expected_in}
        self.outputs = {name: outputs[name] for name in expected_out}
        self.profiles = [self._profile(index) for index in range(engine.num_optimization_profiles)]
        context = engine.create_execution_context()
        if context is None:
            reason = self._error("out of memory?")
            raise MemoryError(f"{path}: TensorRT could not create an execution context: {reason}")
        self.context: trt.IExecutionContext = context
        self._active_profile = 0

    def _error(self, default: str) -> str:
        text, self._last_error.text = self._last_error.text, ""
        return text or default

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
                if not context.set_optimization_profile_async(profile, stream):
                    reason = self._error("no reason given")
                    raise RuntimeError(f"{self.path}: cannot select profile {profile}: {reason}")
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
        tensorrt: TensorRTModule,
        gpu: GpuInfo,
        device_index: int,
        buffers: DeviceBuffers,
        built: Sequence[Path] = (),
    ) -> None:
        self.tensorrt, self.gpu, self.buffers, self.built = tensorrt, gpu, buffers, list(built)
        self.device = f"cuda:{device_index}"
        self._last_error = _LastError()
        self._logger = _make_logger(tensorrt, self._last_error)  # must outlive the runtime
        self._runtime: trt.Runtime = tensorrt.module.Runtime(self._logger)
        opened = {
            graph: _Engine(path, graph, sidecars[graph], self._runtime, buffers, self._last_error)
            for graph, path in engines.items()
        }
        self.estimator = opened.get(contract.GRAPH_ESTIMATOR)
        self.restorer = opened.get(contract.GRAPH_RESTORER)
        self.full = opened.get(contract.GRAPH_FULL)
        self.engines = list(opened.values())
        main = self.full or self.restorer or self.engines[0]
        self.family = main.sidecar.onnx_metadata[contract.META_FAMILY]
        self.scale = int(main.sidecar.onnx_metadata[contract.META_SCALE])
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
    engine_cache: str | os.PathLike[str] | None = None,
    engine_shapes: EngineShapes | None = None,
    buffers: str | DeviceBuffers = "auto",
    builder: BuildFunction | None = None,
    **options: Any,
) -> TensorRTBackend:
    """A TensorRT backend for ``model.engine`` (split engines beside it preferred) or ``model.onnx`` (built, cached).

    ``engine_cache``/``engine_shapes``/``builder`` apply to ONNX models: the cache folder,
    the sizes the engines must take (default :class:`EngineShapes`) and the function that
    builds one engine. ``buffers``: ``"auto"``, ``"torch"``, ``"cuda-python"`` or a
    :class:`DeviceBuffers`.
    """
    if options:
        known = "engine_cache, engine_shapes, buffers, builder"
        raise ConfigError(f"unknown tensorrt backend option(s) {', '.join(sorted(options))}; known: {known}")
    if precision == "bf16":
        raise ConfigError("the tensorrt backend does not run bf16; use fp32/fp16 engines, or the torch backend")
    path = Path(model_path)
    from_onnx = path.suffix.lower() == ".onnx"
    if not from_onnx and (engine_cache is not None or engine_shapes is not None or builder is not None):
        raise ConfigError("the engine cache, engine shapes and builder apply to ONNX models, not to prebuilt engines")
    device_index = parse_device(device)
    tensorrt, gpu = require_tensorrt_and_gpu(device_index)  # before any TensorRT object is created
    built: list[Path] = []
    if from_onnx:
        engines, built = build_or_reuse(
            path,
            shapes=engine_shapes or EngineShapes(),
            fp16=precision == "fp16",
            cache=EngineCache(engine_cache),
            tensorrt=tensorrt,
            gpu=gpu,
            builder=builder,
            precision=precision,
        )
    else:
        engines = engine_files(path)
    sidecars = {}
    for graph, engine in engines.items():
        sidecar, notes = check_engine(engine, tensorrt_version=tensorrt.version, gpu=gpu)
        for note in notes:
            warnings.warn(note, RuntimeWarning, stacklevel=2)
        if tensorrt.lean and not sidecar.version_compatible:
            raise EngineMismatchError(
                f"{engine}: {tensorrt.name} runs version-compatible engines only and this one is not; install the "
                "full tensorrt package, or rebuild it with `lightbsr build --version-compatible`"
            )
        _check_metadata(engine, graph, sidecar)
        sidecars[graph] = sidecar
    _check_same_model(engines, sidecars)
    main = contract.GRAPH_FULL if contract.GRAPH_FULL in engines else contract.GRAPH_RESTORER
    if not from_onnx:
        _check_precision(precision, sidecars[main].precision, f"{engines[main]} ({sidecars[main].precision} engine)")
    return TensorRTBackend(
        engines,
        sidecars,
        tensorrt=tensorrt,
        gpu=gpu,
        device_index=device_index,
        buffers=open_buffers(buffers, device_index),
        built=built,
    )


def _check_metadata(engine: Path, graph: str, sidecar: EngineSidecar) -> None:
    meta = sidecar.onnx_metadata
    if contract.META_GRAPH not in meta:
        raise ModelFileError(f"{engine}: not a lightbsr engine (its sidecar has no {contract.META_GRAPH} metadata)")
    if meta[contract.META_GRAPH] != graph:
        raise ModelFileError(f"{engine}: a lightbsr {meta[contract.META_GRAPH]} engine, not the {graph} engine")
    if meta.get(contract.META_FAMILY) not in ("lightbsr", "kdsr"):
        raise ModelFileError(f"{engine}: unknown model family {meta.get(contract.META_FAMILY)!r} in its sidecar")
    if not meta.get(contract.META_SCALE, "").isdigit():
        raise ModelFileError(f"{engine}: bad {contract.META_SCALE} metadata in its sidecar")


def _check_same_model(engines: Mapping[str, Path], sidecars: Mapping[str, EngineSidecar]) -> None:
    fields = (contract.META_FAMILY, contract.META_SCALE, contract.META_SOURCE_SHA256)
    keys = {tuple(s.onnx_metadata.get(k, "") for k in fields) for s in sidecars.values()}
    if len(keys) > 1:
        raise ModelFileError(f"{' and '.join(map(str, engines.values()))} were not built from the same model")
