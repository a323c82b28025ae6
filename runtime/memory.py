"""How much memory inference needs, how much there is, and the automatic tile size (no torch).

Cost model (bytes per **LR** pixel, float32; half for fp16/bf16), measured as the
peak resident-memory growth of one torch CPU call (torch 2.13, 128² and 256² LR for
the restorer, 512² and 1024² for the estimator):

==========  ===============  ===============
family      restore (tile)   estimate (image)
==========  ===============  ===============
lightbsr    ≈ 11 KB          ≈ 0.4 KB
kdsr        ≈ 8–11 KB        ≈ 2.8 KB
==========  ===============  ===============

The restorer's peak is the ×4 upsampler (256 channels at 2× resolution, 64 at 4×);
the estimator is run once on the whole image when the estimate is shared, so its
cost grows with the image, not with the tile: a 3840×2160 LR image needs about
3.3 GB (LightBSR) or 23 GB (KDSR) for the estimate alone. Where that does not fit, the
torch backend computes LightBSR's estimate exactly in tiles of :func:`estimate_tile`
(its assembled features take ~8 floats per LR pixel); other backends and KDSR refuse
the image with a clear error (per-tile estimates, ``--no-shared-idr``, still work). We budget
``RESTORE_BYTES_PER_PIXEL`` and ``ESTIMATE_BYTES_PER_PIXEL`` below (the measured
figures rounded up) and use at most ``MEMORY_FRACTION`` of what the device reports free.

Automatic tile (:func:`auto_tile`): the whole image if ``height·width·batch`` LR pixels
fit the budget, else the largest multiple of ``TILE_MULTIPLE`` whose square tile
batch fits, clamped to ``[MIN_TILE, MAX_TILE[device kind]]``. A wrong guess is
caught by the out-of-memory retry (the tile is halved), so the model only needs to
be right to within a factor of two.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

RESTORE_BYTES_PER_PIXEL = {"lightbsr": 12 * 1024, "kdsr": 12 * 1024}
ESTIMATE_BYTES_PER_PIXEL = {"lightbsr": 512, "kdsr": 3 * 1024}
PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 2}  # int8 engines keep some layers in fp16/fp32
MEMORY_FRACTION = 0.5
TILE_MULTIPLE = 16
MIN_TILE = 32
MAX_TILE = {"cpu": 512, "cuda": 1024}
FALLBACK_FREE_BYTES = 2 << 30
"""Assumed free memory when the device cannot say (e.g. ONNX Runtime on CUDA without torch or cuda-python)."""


def available_ram() -> int | None:
    """Bytes of RAM the system can give without swapping (Linux ``MemAvailable``), or ``None``."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def restore_bytes(family: str, pixels: int, precision: str = "fp32") -> int:
    """Budgeted peak bytes of restoring ``pixels`` LR pixels (all tiles of one batch together)."""
    return RESTORE_BYTES_PER_PIXEL[family] * pixels * PRECISION_BYTES[precision] // 4


def estimate_bytes(family: str, pixels: int, precision: str = "fp32") -> int:
    """Budgeted peak bytes of estimating the IDR of an image of ``pixels`` LR pixels."""
    return ESTIMATE_BYTES_PER_PIXEL[family] * pixels * PRECISION_BYTES[precision] // 4


def estimate_tile(family: str, free_bytes: int | None, precision: str = "fp32", context: int = 16) -> int:
    """Side of the square tiles of a tiled estimate (multiple of 4, ≥ 16) that fit the free memory with ``context``."""
    budget = MEMORY_FRACTION * (free_bytes if free_bytes is not None else FALLBACK_FREE_BYTES)
    side = math.isqrt(int(budget / estimate_bytes(family, 1, precision))) - 2 * context
    return max(16, min(side, 4096) // 4 * 4)


def auto_tile(
    height: int,
    width: int,
    family: str,
    free_bytes: int | None,
    *,
    precision: str = "fp32",
    batch: int = 1,
    device_kind: str = "cpu",
) -> int | None:
    """The tile size for an image from the free memory: ``None`` (no tiling) if the whole image fits."""
    budget = MEMORY_FRACTION * (free_bytes if free_bytes is not None else FALLBACK_FREE_BYTES)
    per_pixel = restore_bytes(family, 1, precision)
    if height * width * per_pixel <= budget:
        return None
    side = math.isqrt(int(budget / (per_pixel * max(batch, 1))))
    side = side // TILE_MULTIPLE * TILE_MULTIPLE
    return max(MIN_TILE, min(side, MAX_TILE.get(device_kind, MAX_TILE["cpu"])))
