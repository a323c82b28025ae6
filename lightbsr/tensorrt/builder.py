"""The TensorRT calls of ``lightbsr build``: parse the ONNX, set profiles and flags, serialize, write atomically.

A thin layer over the decisions made elsewhere (:func:`.plan.plan_build`,
:func:`lightbsr.tensorrt.engine.derive_profile`); it only runs where TensorRT and a CUDA
GPU exist. ``tensorrt`` is imported inside the functions, so this module imports
anywhere. Written against the TensorRT 10 Python API and kept to the part that
TensorRT 11 still has (no precision builder flags, no ``platform_has_fast_*``,
network creation flags looked up by name); type-checked with ``tensorrt-stubs``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightbsr import cuda
from lightbsr.errors import EngineBuildError, ModelFileError
from lightbsr.files import atomic_output, sha256_file

from .engine import BuildSettings, EngineSidecar, derive_profile, write_sidecar
from .loader import INSTALL, LastError, make_logger, require_gpu, require_tensorrt
from .onnx_info import read_onnx_info
from .plan import plan_build

if TYPE_CHECKING:
    import tensorrt as trt

NOT_INSTALLED = f"TensorRT is not installed ({INSTALL}); use --print-trtexec to get the trtexec command"
NO_GPU = "no CUDA GPU found: TensorRT builds an engine on the GPU it is for; use --print-trtexec to get the command"


def _progress_monitor() -> trt.IProgressMonitor:
    """A tqdm bar (stderr) per optimizer phase; TensorRT calls it from several threads."""
    import tensorrt as trt
    from tqdm import tqdm

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, Any] = {}
            self._lock = threading.Lock()

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            with self._lock:
                self._bars[phase_name] = tqdm(
                    total=num_steps, desc=phase_name, position=len(self._bars), leave=False, file=sys.stderr
                )

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                if phase_name in self._bars:
                    self._bars[phase_name].update(1)
            return True

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return Monitor()


def _parse_onnx(network: trt.INetworkDefinition, logger: trt.ILogger, onnx_path: Path) -> trt.OnnxParser:
    """Parse the ONNX into ``network``; the parser is returned because it owns the weights the network points to."""
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return parser
    problems = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        where = f" at node {error.node_name() or error.node()} ({error.node_operator()})" if error.node() >= 0 else ""
        problems.append(f"{' '.join(error.desc().split())}{where}")
    raise ModelFileError(f"{onnx_path}: TensorRT cannot parse it: {'; '.join(problems) or 'unknown error'}")


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    settings: BuildSettings,
    *,
    timing_cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    device: int = 0,
) -> EngineSidecar:
    """Build ``engine_path`` (and its sidecar) from ``onnx_path`` on CUDA device ``device``; return the sidecar.

    ``report`` receives the notes of the plan (flags ignored and why). Nothing is
    written unless the build succeeds; the timing cache is read and updated in place.
    The device is made current first: TensorRT builds and tunes on the current device.
    """
    version = require_tensorrt(full=True, missing=NOT_INSTALLED).version
    import tensorrt as trt

    info = read_onnx_info(onnx_path)
    plan = plan_build(version, settings, info.precision, info.uint8_qdq)
    profiles = tuple(derive_profile(lr, info.inputs, info.scale) for lr in settings.profiles)
    gpu = require_gpu(device, missing=NO_GPU if device == 0 else f"no CUDA device {device}")
    cuda.select_device(device)
    for note in plan.notes:
        (report or (lambda text: print(f"lightbsr: note: {text}", file=sys.stderr)))(note)

    last_error = LastError()
    logger = make_logger(trt, last_error)
    builder = trt.Builder(logger)
    network_flags = 0
    for name in plan.network_flags:
        network_flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(network_flags)
    parser = _parse_onnx(network, logger, info.path)  # alive until the engine is serialized (it owns the weights)

    config = builder.create_builder_config()
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, plan.hardware_level)
    if settings.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    if settings.builder_optimization_level is not None:
        config.builder_optimization_level = settings.builder_optimization_level
    if timing_cache is not None:
        cache_path = Path(timing_cache)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    for profile in profiles:
        optimization_profile = builder.create_optimization_profile()
        for name, shapes in profile.items():
            optimization_profile.set_shape(name, *(trt.Dims(list(shape)) for shape in shapes))
        config.add_optimization_profile(optimization_profile)
    if progress:
        config.progress_monitor = _progress_monitor()

    serialized = builder.build_serialized_network(network, config)
    del parser, network  # only now may the weights go
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build {engine_path}: {last_error.text or 'no reason given'}")
    with atomic_output(engine_path) as tmp:
        tmp.write_bytes(serialized)
    sidecar = EngineSidecar(
        tensorrt_version=version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=plan.precision,
        profiles=profiles,
        onnx_sha256=info.sha256,
        engine_sha256=sha256_file(engine_path),
        onnx_metadata=info.metadata,
        version_compatible=settings.version_compatible,
        hardware_compatibility=settings.hardware_compatibility,
        strongly_typed=plan.strongly_typed,
        builder_flags=plan.builder_flags,
    )
    write_sidecar(engine_path, sidecar)
    if timing_cache is not None:
        with atomic_output(timing_cache) as tmp:
            tmp.write_bytes(config.get_timing_cache().serialize())
    return sidecar
