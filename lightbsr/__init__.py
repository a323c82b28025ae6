"""lightbsr: a deployment toolkit for lightweight ×4 blind super-resolution.

The top-level package imports nothing heavy: ``import lightbsr`` works without
torch, so that the ONNX Runtime / TensorRT runtime can ship without it.
Torch-based parts live in :mod:`lightbsr.models`, :mod:`lightbsr.degradation`,
:mod:`lightbsr.metrics` and :mod:`lightbsr.checkpoint`.
"""

from lightbsr._version import __version__

__all__ = ["__version__"]
