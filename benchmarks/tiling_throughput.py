"""Tiling without a tax? Throughput of exact and blend tiling against the untiled image, in the same run.

For each backend (torch on the checkpoint, ONNX Runtime on the FP32 ONNX with its split graphs),
one LR crop of a real image (``size`` × ``size``) is upscaled by :class:`lightbsr.runtime.Upscaler`
whole (``tile=0``), then with each tile size: ``exact`` (torch, LightBSR) and ``blend`` (every
backend; the default overlap). Each configuration is warmed up on a small crop (sessions,
allocations), then timed ``repeats`` times; throughput is output megapixels per second at the
median, and its percentage of the untiled throughput of the same backend.

Blend tiles are balanced (:func:`lightbsr.runtime.tiling.balanced_tile`); ``work`` is the LR pixels
the tiles cover over the image's, for the balanced plan and for the plain plan of the tile asked
for, so that the cost of the overlap can be read beside the measured throughput.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["TilingRow", "measure_tiling", "work_ratio"]


@dataclass
class TilingRow:
    """One backend × tiling × tile."""

    backend: str
    tiling: str  # none | exact | blend
    tile: int | None
    tile_used: int | None = None
    overlap: int = 0
    tiles: int = 1
    runs: int = 0
    median_s: float | None = None
    output_mp_per_s: float | None = None
    pct_of_untiled: float | None = None
    work: float | None = None
    work_plain_plan: float | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def work_ratio(height: int, width: int, tile: int, overlap: int) -> float:
    """LR pixels computed by the blend tiles of ``plan_tiles(height, width, tile, overlap)`` over the image's."""
    from lightbsr.runtime.tiling import plan_tiles

    covered = sum(t.height * t.width for t in plan_tiles(height, width, tile, overlap))
    return round(covered / (height * width), 3)


def measure_tiling(
    models: dict[str, str | os.PathLike[str]],
    image: str | os.PathLike[str],
    *,
    size: int = 512,
    tiles: Sequence[int] = (128, 256),
    threads: int | None = None,
    repeats: int = 2,
    progress: bool = True,
) -> list[TilingRow]:
    """Measure the configurations of the module docstring; ``models`` maps a backend name to its model file."""
    from tqdm import tqdm

    from lightbsr.errors import LightBSRError, one_line
    from lightbsr.runtime import Upscaler
    from lightbsr.runtime.tiling import balanced_tile
    from lightbsr.runtime.upscaler import DEFAULT_OVERLAP

    from .latency import image_crop

    lr = image_crop(image, size, size)[0]
    configs: list[tuple[str, str, int | None]] = []
    for backend in models:
        configs.append((backend, "none", None))
        for tile in tiles:
            if backend == "torch":
                configs.append((backend, "exact", tile))
            configs.append((backend, "blend", tile))
    rows: list[TilingRow] = []
    untiled: dict[str, float] = {}
    for backend, tiling, tile in tqdm(configs, desc="tiling", unit="config", disable=not progress, leave=False):
        row = TilingRow(backend, tiling, tile)
        rows.append(row)
        options: dict[str, Any] = {"threads": threads} if threads else {}
        try:
            upscaler = Upscaler(
                models[backend],
                backend=backend,
                device="cpu",
                tile=tile or 0,
                tiling="auto" if tiling == "none" else tiling,
                **options,
            )
            upscaler.upscale_lr(lr[:, :48, :48])  # warm-up: sessions, allocations
            times = []
            for _ in range(max(1, repeats)):
                start = time.perf_counter()
                upscaler.upscale_lr(lr)
                times.append(time.perf_counter() - start)
        except (LightBSRError, MemoryError) as err:
            row.error = one_line(err)
            continue
        info = upscaler.last_run
        row.tile_used, row.tiles, row.overlap, row.runs = info.tile, info.tiles, info.tile_overlap, len(times)
        row.median_s = round(statistics.median(times), 3)
        row.output_mp_per_s = round(size * size * upscaler.scale**2 / 1e6 / row.median_s, 4)
        if tiling == "none":
            untiled[backend] = row.output_mp_per_s
        elif backend in untiled:
            row.pct_of_untiled = round(100 * row.output_mp_per_s / untiled[backend], 1)
        if tiling == "blend" and tile:
            overlap = min(DEFAULT_OVERLAP, tile // 2)
            row.work = work_ratio(size, size, balanced_tile(size, size, tile, overlap), overlap)
            row.work_plain_plan = work_ratio(size, size, tile, overlap)
    return rows
