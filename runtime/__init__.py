"""Runtime stage: backends and tiled inference (``lightbsr.runtime``); imports without torch.

>>> from lightbsr.runtime import Upscaler
>>> up = Upscaler("model.onnx", tile=256, tile_overlap=16)   # doctest: +SKIP
>>> sr = up.upscale(image)                                    # doctest: +SKIP

* :class:`Upscaler` — one model on one backend; whole-image or tiled inference with a
  degradation estimate shared by all tiles (:mod:`.upscaler`).
* :func:`plan_tiles`, :func:`tile_window`, :class:`Blender` — the tile plan and blending
  window, numpy only (:mod:`.tiling`).
* :class:`Backend`, :func:`load_backend`, :data:`BACKENDS` — the backend interface and
  registry (:mod:`.backend`); the torch, onnxruntime and tensorrt backends are imported
  only when used (tensorrt: docs/tensorrt.md).
* videos — :func:`.video.upscale_video` (PyAV, ``pip install 'lightbsr[video]'``): decode, upscale
  and encode in a pipeline, with one degradation estimate per scene (:mod:`.scenes`).
* ``lightbsr upscale`` — the command line (:mod:`.cli`).
"""

from __future__ import annotations

import importlib
from typing import Any

# Exports are imported on first use (PEP 562), so that `lightbsr --help`, which imports
# lightbsr.runtime.cli, does not pay for numpy and the backends.
_EXPORTS = {
    "BACKENDS": "lightbsr.runtime.backend",
    "IDR": "lightbsr.runtime.backend",
    "Backend": "lightbsr.runtime.backend",
    "load_backend": "lightbsr.runtime.backend",
    "Blender": "lightbsr.runtime.tiling",
    "Tile": "lightbsr.runtime.tiling",
    "plan_tiles": "lightbsr.runtime.tiling",
    "tile_window": "lightbsr.runtime.tiling",
    "RunInfo": "lightbsr.runtime.upscaler",
    "Upscaler": "lightbsr.runtime.upscaler",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
