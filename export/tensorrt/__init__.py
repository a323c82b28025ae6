"""TensorRT engines from lightbsr ONNX models (``lightbsr.export.tensorrt``; CLI: ``lightbsr build``).

- :mod:`.plan`: TensorRT version × flags × ONNX precision → network/builder flags (pure);
- :mod:`.trtexec`: the equivalent ``trtexec`` command line, and its parser (pure);
- :mod:`.onnx_info`: inputs, metadata and precision of an ONNX file;
- :mod:`.builder`: the TensorRT calls (imports ``tensorrt`` lazily, runs only where it and a GPU exist).

Engine metadata shared with the runtime (sidecar, compatibility checks, cache) is in
:mod:`lightbsr.engine`. Importing this package imports neither tensorrt nor torch.
"""

from .builder import build_engine, get_or_build, installed_version, load_engine
from .onnx_info import OnnxInfo, read_onnx_info
from .plan import BuildPlan, plan_build
from .trtexec import parse_trtexec_command, trtexec_command

__all__ = [
    "BuildPlan",
    "OnnxInfo",
    "build_engine",
    "get_or_build",
    "installed_version",
    "load_engine",
    "parse_trtexec_command",
    "plan_build",
    "read_onnx_info",
    "trtexec_command",
]
