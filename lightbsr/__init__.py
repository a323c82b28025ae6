"""lightbsr: a deployment toolkit for lightweight ×4 blind super-resolution.

The top-level package imports nothing heavy: ``import lightbsr`` works without
torch, so that the ONNX Runtime / TensorRT runtime can ship without it. It sets
``OMP_WAIT_POLICY=PASSIVE`` unless already set (:func:`lightbsr.hardware.prefer_passive_wait`).
Torch-based parts live in :mod:`lightbsr.models`, :mod:`lightbsr.degradation`,
:mod:`lightbsr.metrics` and :mod:`lightbsr.checkpoint`.
"""

from lightbsr._version import __version__
from lightbsr.hardware import prefer_passive_wait

prefer_passive_wait()  # before torch loads OpenMP: idle threads sleep (see lightbsr.hardware)

__all__ = ["__version__"]
