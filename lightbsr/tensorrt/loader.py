"""The TensorRT Python module, its logger, the GPU, and loading engines: the one home of each (no torch).

- :func:`import_tensorrt` — the one import probe: the full ``tensorrt`` module, else the lean or
  dispatch runtime (``tensorrt_lean``, ``tensorrt_dispatch``), as :class:`TensorRTModule`;
- :func:`make_logger` — the one ``ILogger``: warnings and errors to stderr, the last error kept in
  a :class:`LastError` for the one-line failure messages;
- :func:`require_tensorrt`, :func:`require_gpu` — what is missing, said in one line;
- :class:`EngineLoader` — one ``IRuntime`` with its logger: checks an engine's sidecar against this
  machine (:func:`lightbsr.tensorrt.engine.check_engine`) and deserializes it.

``tensorrt`` is imported inside the functions, so this module imports anywhere.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightbsr.errors import BackendUnavailableError, EngineMismatchError

from .engine import EngineSidecar, GpuInfo, check_engine, detect_gpu

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = [
    "INSTALL",
    "RUNTIME_MODULES",
    "EngineLoader",
    "LastError",
    "TensorRTModule",
    "check_sidecar",
    "import_tensorrt",
    "installed_version",
    "make_logger",
    "require_gpu",
    "require_tensorrt",
]

RUNTIME_MODULES = ("tensorrt", "tensorrt_lean", "tensorrt_dispatch")
"""TensorRT Python modules, in order of preference: the full one, then the lean and dispatch runtimes."""

INSTALL = "pip install lightbsr[trt], or the python3-libnvinfer package of JetPack"


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

    @property
    def can_build(self) -> bool:
        return not self.lean and hasattr(self.module, "Builder")


def import_tensorrt(*, full: bool = False) -> TensorRTModule | None:
    """The first usable module of :data:`RUNTIME_MODULES` (only ``tensorrt`` with ``full``), or None.

    ``tensorrt-stubs`` alone leaves an empty ``tensorrt`` namespace package, so a module
    counts only with a ``Runtime`` and a version string.
    """
    for name in RUNTIME_MODULES[:1] if full else RUNTIME_MODULES:
        try:
            module = importlib.import_module(name)
        except (ImportError, OSError):  # OSError: the wheel is there, its shared libraries are not
            continue
        version = getattr(module, "__version__", None)
        if isinstance(version, str) and hasattr(module, "Runtime"):
            return TensorRTModule(module, name, version)
    return None


def installed_version() -> str | None:
    """The version of the full ``tensorrt`` module (the one that builds engines), or None."""
    found = import_tensorrt(full=True)
    return found.version if found is not None and found.can_build else None


def require_tensorrt(*, full: bool = False, missing: str = f"TensorRT is not installed: {INSTALL}") -> TensorRTModule:
    """The TensorRT module (the full one with ``full``), or BackendUnavailableError(``missing``)."""
    found = import_tensorrt(full=full)
    if found is None or (full and not found.can_build):
        raise BackendUnavailableError(missing)
    return found


def require_gpu(device: int = 0, *, missing: str = "no CUDA GPU found") -> GpuInfo:
    """CUDA device ``device`` as :class:`GpuInfo`, or BackendUnavailableError(``missing``)."""
    gpu = detect_gpu(device)
    if gpu is None:
        raise BackendUnavailableError(missing)
    return gpu


@dataclass
class LastError:
    """Where the logger keeps TensorRT's last error message, for the one-line failure message."""

    text: str = ""

    def take(self, default: str) -> str:
        """The last error (then forgotten), or ``default`` when TensorRT said nothing."""
        text, self.text = self.text, ""
        return text or default


def make_logger(module: Any, last_error: LastError) -> trt.ILogger:
    """A TensorRT logger: warnings and errors to stderr, the last error kept in ``last_error``.

    ``module`` is whichever TensorRT module is in use (``tensorrt``, ``tensorrt_lean`` or
    ``tensorrt_dispatch``): the logger subclasses its ``ILogger``. TensorRT may log from
    several threads.
    """
    lock = threading.Lock()

    def __init__(self: Any) -> None:
        module.ILogger.__init__(self)

    def log(self: Any, severity: Any, msg: str) -> None:
        with lock:
            if severity <= module.ILogger.Severity.ERROR:
                last_error.text = " ".join(msg.split())
            if severity <= module.ILogger.Severity.WARNING:
                print(f"[TensorRT] {severity.name}: {msg}", file=sys.stderr)

    logger: trt.ILogger = type("Logger", (module.ILogger,), {"__init__": __init__, "log": log})()
    return logger


class EngineLoader:
    """One TensorRT runtime and its logger on one GPU: checks engines' sidecars, then deserializes them.

    The logger must outlive the runtime and every engine, so they live together here.
    Create it after :func:`lightbsr.cuda.select_device`: TensorRT loads onto the current device.
    """

    def __init__(self, tensorrt: TensorRTModule, gpu: GpuInfo) -> None:
        self.tensorrt, self.gpu = tensorrt, gpu
        self.last_error = LastError()
        self.logger = make_logger(tensorrt.module, self.last_error)
        self.runtime: trt.Runtime = tensorrt.module.Runtime(self.logger)

    def check(
        self, engine_path: str | os.PathLike[str], *, onnx_sha256: str | None = None
    ) -> tuple[EngineSidecar, list[str]]:
        """The engine's sidecar and warnings; EngineMismatchError (one line) when it cannot run here."""
        return check_sidecar(engine_path, self.tensorrt, self.gpu, onnx_sha256=onnx_sha256)

    def load(self, engine_path: str | os.PathLike[str], sidecar: EngineSidecar) -> trt.ICudaEngine:
        """Deserialize a checked engine (EngineMismatchError with TensorRT's reason when it cannot)."""
        if sidecar.version_compatible:
            self.runtime.engine_host_code_allowed = True  # a version-compatible plan embeds its lean runtime
        engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if engine is None:
            raise EngineMismatchError(
                f"{engine_path}: TensorRT could not load it: {self.last_error.take('no reason given')}"
            )
        return engine


def check_sidecar(
    engine_path: str | os.PathLike[str], tensorrt: TensorRTModule, gpu: GpuInfo, *, onnx_sha256: str | None = None
) -> tuple[EngineSidecar, list[str]]:
    """:func:`~lightbsr.tensorrt.engine.check_engine` for this module (lean runtimes: version-compatible only)."""
    sidecar, warnings = check_engine(engine_path, tensorrt_version=tensorrt.version, gpu=gpu, onnx_sha256=onnx_sha256)
    if tensorrt.lean and not sidecar.version_compatible:
        raise EngineMismatchError(
            f"{engine_path}: {tensorrt.name} runs version-compatible engines only and this one is not; install the "
            "full tensorrt package, or rebuild it with `lightbsr build --version-compatible`"
        )
    return sidecar, warnings
