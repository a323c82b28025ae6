"""TensorRT engines: the one home of everything about them (``lightbsr.tensorrt``; no torch, no tensorrt at import).

- :mod:`.engine`: shapes and profiles, build settings, the JSON sidecar written beside every engine,
  the compatibility checks against this machine, and the engine cache with its key (pure Python);
- :mod:`.plan`: TensorRT version × flags × ONNX precision → network/builder flags (pure);
- :mod:`.trtexec`: the equivalent ``trtexec`` command line, and its parser (pure);
- :mod:`.onnx_info`: inputs, metadata and precision of an ONNX file (the onnx package);
- :mod:`.loader`: the TensorRT import probe, the logger, the GPU, and loading engines;
- :mod:`.builder`: the TensorRT calls that build an engine (only where TensorRT and a GPU exist).

``lightbsr build`` (:mod:`lightbsr.export.build_cli`) builds engines with it; the runtime's
TensorRT backend (:mod:`lightbsr.runtime.tensorrt_backend`) loads and runs them with it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BuildSettings": "engine",
    "EngineCache": "engine",
    "EngineSidecar": "engine",
    "GpuInfo": "engine",
    "ShapeRange": "engine",
    "check_engine": "engine",
    "BuildPlan": "plan",
    "plan_build": "plan",
    "parse_trtexec_command": "trtexec",
    "trtexec_command": "trtexec",
    "OnnxInfo": "onnx_info",
    "read_onnx_info": "onnx_info",
    "EngineLoader": "loader",
    "TensorRTModule": "loader",
    "import_tensorrt": "loader",
    "installed_version": "loader",
    "build_engine": "builder",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
