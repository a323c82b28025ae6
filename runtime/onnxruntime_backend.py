"""ONNX Runtime backend: the exported graphs, on the TensorRT, CUDA or CPU execution provider (no torch).

Given ``model.onnx`` it runs the split graphs ``model.estimator.onnx`` and
``model.restorer.onnx`` beside it (names from :mod:`lightbsr.contract`) — which is
what tiled inference with a shared degradation estimate needs — and falls back to
the full graph alone (whole-image or per-tile estimates only) when they are absent.
Passing a split graph's own path works too. Every graph must carry the contract's
metadata (``lightbsr.graph``, ``lightbsr.family``, ``lightbsr.scale``) and tensor names;
anything else is refused as "not a lightbsr graph".

Graphs run in their own precision: a float16 graph gets float16 inputs. Asking for
``fp16`` with a float32 graph is only possible on the TensorRT execution provider
(which then builds float16 engines); ``bf16`` is not supported here.

:func:`session` is the one ONNX Runtime session factory of lightbsr (and :func:`run` the one way
to run a session with one-line errors): the export, training and benchmark stages open their
graphs with it, or through :func:`lightbsr.runtime.load_backend`.

Execution providers, unless ``providers`` overrides them: ``device="cpu"`` → CPU;
``"cuda"``/``"cuda:N"`` → TensorRT, CUDA (those available in this onnxruntime build),
then CPU; ``"auto"`` → the same as cuda when the CUDA provider is available, else CPU.
ONNX Runtime falls back along that list by itself when a provider cannot start; the
providers really in use are in :meth:`describe`. The TensorRT provider builds an
engine per input shape (cached under ``$XDG_CACHE_HOME/lightbsr/ort-trt``): tiled
inference keeps the shapes few.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightbsr import contract, cuda
from lightbsr.errors import BackendUnavailableError, ConfigError, LightBSRWarning, ModelFileError, first_line
from lightbsr.hardware import ORT_SPINNING, available_cpus
from lightbsr.runtime.backend import GraphBackend, Workload, check_graph, typed_feeds

try:
    import onnxruntime as ort
except ImportError as _err:  # pragma: no cover - onnxruntime is a dependency; slim installs may lack it
    raise ModuleNotFoundError("onnxruntime is not installed", name="onnxruntime") from _err

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
_OOM_MESSAGES = ("failed to allocate memory", "out of memory", "bad_alloc", "bad allocation", "alloc_failed")


OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
"""ONNX Runtime graph optimisation levels; ``all`` adds the layout transforms (NCHWc blocked convolutions on x86)."""


def session(
    source: str | os.PathLike[str] | bytes,
    *,
    providers: Sequence[Any] = (CPU_EP,),
    threads: int | None = None,
    name: str | None = None,
    optimize: bool | str = True,
    spinning: bool = ORT_SPINNING,
    memory_arena: bool = True,
    save_optimized: str | os.PathLike[str] | None = None,
    profile_prefix: str | None = None,
) -> ort.InferenceSession:
    """An ONNX Runtime session for a model file (or serialized model bytes), errors only logged.

    ``threads``: intra-op threads (default: :func:`lightbsr.hardware.available_cpus`, which counts a
    cgroup CPU quota; ONNX Runtime's own default does not). ``spinning``: whether idle threads spin
    (default :data:`lightbsr.hardware.ORT_SPINNING`: they sleep, which keeps a shared machine usable).
    ``optimize``: a level of :data:`OPTIMIZATION_LEVELS` (``True``: ``all``; ``False``: ``disable``,
    for many short-lived sessions such as the INT8 layer search). ``memory_arena``: ONNX Runtime's
    CPU memory arena and memory patterns (on by default). ``save_optimized``: write the graph as
    optimised (which kernels ONNX Runtime really runs) to this file. ``profile_prefix``: turn ONNX
    Runtime's profiler on, writing to files with this prefix (``session.end_profiling()`` returns the name).

    A file or model ONNX Runtime cannot load is a :class:`ModelFileError` in one line.
    """
    what = name or ("in-memory model" if isinstance(source, bytes) else str(source))
    level = "all" if optimize is True else "disable" if optimize is False else optimize
    if level not in OPTIMIZATION_LEVELS:
        raise ConfigError(f"unknown graph optimization level {level!r}; choose from {', '.join(OPTIMIZATION_LEVELS)}")
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        source = str(path)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; provider fallbacks are detected and reported by the backend
    options.intra_op_num_threads = threads or available_cpus()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.enable_cpu_mem_arena = memory_arena
    options.enable_mem_pattern = memory_arena
    if save_optimized is not None:
        options.optimized_model_filepath = str(save_optimized)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    check_providers(providers)
    try:
        # onnxruntime's Python wrapper prints its provider-fallback banner with print(): keep it off stdout
        # (where --json goes); what happened is read back from the session and reported (_check_fallback)
        with contextlib.redirect_stdout(io.StringIO()):
            return ort.InferenceSession(source, sess_options=options, providers=list(providers))
    except Exception as err:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        raise ModelFileError(f"{what}: not a loadable ONNX model ({first_line(err)})") from err


def check_providers(providers: Sequence[Any]) -> None:
    """ConfigError for an execution provider this onnxruntime lacks (a typo, or a GPU provider on a CPU build)."""
    available = ort.get_available_providers()
    names = [_provider_name(p) for p in providers]
    if not names:
        raise ConfigError("no onnxruntime execution provider given")
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ConfigError(
            f"onnxruntime execution provider {', '.join(unknown)} is not available here; this onnxruntime has "
            f"{', '.join(available)}"
        )


def run(
    session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
) -> list[np.ndarray]:
    """Run a session; its outputs as float32 arrays (a failure is a one-line ModelFileError)."""
    try:
        result = session.run(list(outputs) if outputs is not None else None, dict(feeds))
    except Exception as err:
        raise ModelFileError(f"ONNX Runtime failed to run the model ({first_line(err)})") from err
    return [np.asarray(value, dtype=np.float32) for value in result]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lightbsr" / "ort-trt"


def choose_providers(device: str, precision: str | None) -> list[Any]:
    """Execution providers (with options) for ``device``, in order of preference."""
    available = ort.get_available_providers()
    gpu = [p for p in (TRT_EP, CUDA_EP) if p in available]
    if device == "cpu":
        return [CPU_EP]
    if device == "auto":
        if CUDA_EP not in available:
            return [CPU_EP]
        device = "cuda"
    if not device.startswith("cuda"):
        raise ConfigError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or auto")
    if CUDA_EP not in available:
        raise BackendUnavailableError(
            "CUDA was asked for, but this onnxruntime has no CUDA execution provider (install onnxruntime-gpu)"
        )
    _, _, index = device.partition(":")
    device_id = int(index) if index.isdigit() else 0
    providers: list[Any] = []
    for name in gpu:
        options: dict[str, Any] = {"device_id": device_id}
        if name == TRT_EP:
            cache = _cache_dir()
            cache.mkdir(parents=True, exist_ok=True)  # the TensorRT EP creates it non-recursively, and throws
            options |= {
                "trt_fp16_enable": precision == "fp16",
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
            }
        providers.append((name, options))
    return [*providers, CPU_EP]


class _Graph:
    """One ONNX Runtime session with the contract checked."""

    def __init__(
        self, path: Path, graph: str, providers: list[Any], threads: int | None, options: Mapping[str, Any]
    ) -> None:
        self.session = session(path, providers=providers, threads=threads, **options)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.int8_target = contract.int8_target(meta)
        self.source = meta.get(contract.META_SOURCE_SHA256, "")
        self.path = path
        self.inputs = {i.name: i.type for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.family, self.scale = check_graph(path, graph, meta, self.inputs, self.outputs)

    @property
    def precision(self) -> str:
        return "fp16" if self.inputs[contract.INPUT_LR] == "tensor(float16)" else "fp32"

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return run(self.session, typed_feeds(feeds, self.inputs), self.outputs)


class OnnxRuntimeBackend(GraphBackend):
    """Split (estimator + restorer) or full lightbsr ONNX graphs on ONNX Runtime."""

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        device: str = "auto",
        precision: str | None = None,
        providers: list[Any] | None = None,
        threads: int | None = None,
        split: bool = True,
        session_options: Mapping[str, Any] | None = None,
    ) -> None:
        if precision == "bf16":
            raise ConfigError("the onnxruntime backend does not run bf16; use fp32/fp16 graphs, or the torch backend")
        files = contract.resolve_graphs(model_path)
        chosen = providers if providers is not None else choose_providers(device, precision)
        present = files.present() if split else {contract.GRAPH_FULL: files.full}
        options = dict(session_options or {})
        opened = {graph: _Graph(path, graph, chosen, threads, options) for graph, path in present.items()}
        self._set_graphs(opened, files)
        first = next(iter(opened.values()))
        self.providers = list(first.session.get_providers())
        self.device = _check_fallback(first.session, chosen, explicit=providers is not None)
        _check_int8_target(first, self.providers[0])
        graph_precision = first.precision
        if precision in (None, graph_precision):
            self.precision = graph_precision
        elif precision == "fp16" and self.providers[0] == TRT_EP:
            self.precision = "fp16"  # TensorRT builds float16 engines from the float32 graph
        else:
            raise ConfigError(
                f"{first.path} is an {graph_precision} graph; the onnxruntime backend runs graphs in their own "
                f"precision (export an {precision} graph, or use the TensorRT execution provider for fp16)"
            )

    def free_memory(self) -> int | None:
        if self.device_kind == "cuda":
            _, _, index = self.device.partition(":")
            return cuda.free_memory(int(index) if index.isdigit() else 0)
        return super().free_memory()

    def is_out_of_memory(self, err: BaseException) -> bool:
        return isinstance(err, MemoryError) or any(m in str(err).lower() for m in _OOM_MESSAGES)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "providers": self.providers}


def _provider_name(provider: Any) -> str:
    return str(provider[0] if isinstance(provider, tuple) else provider)


def _device_id(options: Mapping[str, Any]) -> int:
    value = str(options.get("device_id", 0))
    return int(value) if value.isdigit() else 0


def _check_fallback(session: ort.InferenceSession, chosen: Sequence[Any], *, explicit: bool) -> str:
    """The device the session really runs on; a provider ONNX Runtime fell back from is reported or refused.

    ONNX Runtime's Python wrapper retries a session whose provider cannot start on its fallback
    providers *without* their options: the device asked for is then silently lost. Losing the
    device, or a provider the caller named explicitly, is a BackendUnavailableError; a provider
    chosen automatically that did not start is a warning.
    """
    used = list(session.get_providers())
    options = session.get_provider_options()
    wanted = {_provider_name(p): dict(p[1]) if isinstance(p, tuple) else {} for p in chosen}
    gpu = next((p for p in used if p in (TRT_EP, CUDA_EP)), None)
    device = "cpu" if gpu is None else f"cuda:{_device_id(options.get(gpu, {}))}"
    asked = next((p for p in wanted if p in (TRT_EP, CUDA_EP)), None)
    if asked is not None and gpu is not None and _device_id(wanted[asked]) != _device_id(options.get(gpu, {})):
        raise BackendUnavailableError(
            f"onnxruntime could not start {asked} on cuda:{_device_id(wanted[asked])} and fell back to {gpu} on "
            f"{device} (its options lost); check that device, or choose the providers with --providers"
        )
    lost = [p for p in wanted if p not in used]
    if lost:
        message = f"onnxruntime could not start {', '.join(lost)}; running on {', '.join(used)}"
        if explicit:
            raise BackendUnavailableError(f"{message} (those providers were asked for explicitly)")
        warnings.warn(message, LightBSRWarning, stacklevel=3)
    return device


def _check_int8_target(graph: _Graph, provider: str) -> None:
    """Warn when an INT8 graph made for one target runs on the other (it runs, slowly or not as meant)."""
    target = graph.int8_target
    if target == "tensorrt" and provider == CPU_EP:
        warnings.warn(
            f"{graph.path.name} is INT8 Q/DQ made for TensorRT (signed activations), which ONNX Runtime's CPU "
            "kernels run slowly; for the CPU quantize with `lightbsr quantize --int8 --target cpu`",
            RuntimeWarning,
            stacklevel=4,
        )
    elif target == "cpu" and provider == TRT_EP:
        warnings.warn(
            f"{graph.path.name} is INT8 Q/DQ made for ONNX Runtime's CPU kernels (uint8 activations), which "
            "TensorRT does not take as INT8; for TensorRT quantize with `lightbsr quantize --int8 --target tensorrt`",
            RuntimeWarning,
            stacklevel=4,
        )


def load(
    model_path: str | os.PathLike[str],
    *,
    device: str = "auto",
    precision: str | None = None,
    providers: list[Any] | None = None,
    threads: int | None = None,
    split: bool = True,
    session_options: Mapping[str, Any] | None = None,
    workload: Workload | None = None,
    **options: Any,
) -> OnnxRuntimeBackend:
    """An ONNX Runtime backend for ``model.onnx`` (split graphs beside it preferred, unless ``split=False``).

    ``session_options``: keyword arguments of :func:`session` (``optimize``, ``spinning``, ``memory_arena``).
    """
    if options:
        known = "providers, threads, split, session_options"
        raise ConfigError(f"unknown onnxruntime backend option(s) {', '.join(sorted(options))}; known: {known}")
    return OnnxRuntimeBackend(
        model_path,
        device=device,
        precision=precision,
        providers=providers,
        threads=threads,
        split=split,
        session_options=session_options,
    )
