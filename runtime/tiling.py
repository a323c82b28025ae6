"""The tile plan and the blending window of tiled inference (numpy only).

This module is the specification a C++ port is tested against, so every rule is
spelled out here and nothing else decides where tiles go or how they are weighted.

Tile plan (:func:`plan_tiles`), in LR pixels, for an image of ``height × width``,
a tile size ``T ≥ 1`` and an overlap ``0 ≤ O < T``. Each axis of length ``L`` is
split independently by :func:`axis_starts`:

* ``L ≤ T``: one tile, start 0, length ``L`` (an image smaller than a tile is one
  tile of the image's size along that axis; nothing is padded);
* ``L > T``: stride ``S = T − O``, ``n = ⌈(L − T) / S⌉ + 1`` tiles, starts
  ``min(i·S, L − T)`` for ``i = 0 … n−1``, every tile of length ``T``. The last tile
  is clamped so that it ends exactly at the border: it overlaps its neighbour by at
  least ``O`` (by exactly ``O`` when ``(L − T)`` is a multiple of ``S``).

The tiles are the Cartesian product of the row starts and the column starts, listed
row by row (top to bottom, then left to right). All tiles of a plan have the same
size, ``min(T, height) × min(T, width)``, which is what lets them be batched. A
tile never leaves the image, so a tile touching the border sees the same border
(the network's own zero padding) as the untiled image does.

Blending window (:func:`tile_window`), at the output resolution (``scale`` × the LR
tile), separable: ``w(y, x) = a(y)·b(x)``. Along an axis, a tile side that lies *inside*
the image gets, from its edge inwards, ``M = m·scale`` zeros with ``m = ⌊O/4⌋``
(:func:`overlap_margin`: the pixels nearest a tile's cut edge, which saw the least
context, are not used), then a raised-cosine ramp of ``R = (O − 2m)·scale`` samples,
``ramp(k) = sin²(π/2 · (k + ½) / R)`` for ``k = 0 … R−1``, then ones. A side on the image
border has no zeros and no ramp (weight 1 up to the border). A tile's end side mirrors
its start side; where the two reach the same sample (very small tiles) they multiply.

Since ``2M + R = O·scale`` and ``ramp(k) + ramp(R − 1 − k) = 1``, the windows of two
tiles overlapping by exactly ``O`` sum to 1 (the zeros of one face the ones of the
other); in every case the blended output is ``Σ wᵢ·tileᵢ / Σ wᵢ`` (:class:`Blender`),
and ``Σ wᵢ > 0`` at every pixel (each tile's zeros lie inside its neighbour's non-zero
part, because ``2m ≤ O``). With ``O = 0`` the windows are all ones and the tiles are
pasted side by side.

Tile options (:func:`check_tile_options`): a tile ``T ≥ 0`` (0: never tile) or none (chosen
by the caller), an overlap ``O ≥ 0`` with ``O < T`` when both are given, a batch ``≥ 1``.
Tile cap (:func:`cap_tile`): a backend that takes inputs up to ``H × W`` only (a TensorRT
engine's profile) gets ``T' = min(H, W)`` when ``T > min(H, W)``, with the overlap reduced
to ``min(O, ⌊T'/2⌋)``; a tile that fits is kept as it is.

Balanced tile (:func:`balanced_tile`): the smallest tile that covers the image with as many
tiles as ``T`` does. With ``T`` itself, the last tile of an axis is clamped to the border and
overlaps its neighbour by much more than ``O`` (512 pixels in tiles of 256 with an overlap of 24:
three tiles, 768 pixels computed for 512); the balanced tile spreads the same count evenly
(three tiles of 187: 561 pixels). Per axis of length ``L > T`` split into ``n`` tiles, the
smallest tile that still takes ``n`` is ``⌈(L + (n − 1)·O) / n⌉``; the balanced tile is the
largest of those over the split axes and of the lengths of the axes that are not split (so that
they stay one tile). It is never larger than ``T``. The plan itself is unchanged: the runtime
plans with the balanced tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Blender",
    "Tile",
    "axis_starts",
    "axis_window",
    "balanced_tile",
    "cap_tile",
    "check_tile_options",
    "overlap_margin",
    "plan_tiles",
    "raised_cosine_ramp",
    "tile_window",
]


@dataclass(frozen=True)
class Tile:
    """A tile of the LR image: rows ``y … y+height−1``, columns ``x … x+width−1``."""

    y: int
    x: int
    height: int
    width: int

    def slices(self, scale: int = 1) -> tuple[slice, slice]:
        """Row and column slices of this tile in an image ``scale`` times the LR size."""
        return (
            slice(self.y * scale, (self.y + self.height) * scale),
            slice(self.x * scale, (self.x + self.width) * scale),
        )


def _check_plan_args(tile: int, overlap: int) -> None:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be an integer in [0, tile) = [0, {tile}), got {overlap!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_tile_options(tile: int | None, overlap: int | None, batch: int = 1) -> None:
    """ValueError (one line) unless the tiling options are valid (see the module docstring)."""
    if tile is not None and (not _is_int(tile) or tile < 0):
        raise ValueError(f"tile (--tile) must be an integer ≥ 0 (0: never tile), got {tile!r}")
    if overlap is not None and (not _is_int(overlap) or overlap < 0):
        raise ValueError(f"tile overlap (--tile-overlap) must be an integer ≥ 0, got {overlap!r}")
    if tile and overlap is not None and overlap >= tile:
        raise ValueError(f"tile overlap ({overlap}) must be smaller than the tile ({tile})")
    if not _is_int(batch) or batch < 1:
        raise ValueError(f"tile batch (--tile-batch) must be an integer ≥ 1, got {batch!r}")


def cap_tile(tile: int, overlap: int, max_height: int, max_width: int) -> tuple[int, int, bool]:
    """(tile, overlap, capped): the tile reduced to what a backend taking ``max_height × max_width`` accepts."""
    cap = min(max_height, max_width)
    if tile <= cap:
        return tile, overlap, False
    return cap, min(overlap, cap // 2), True


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis of ``length`` pixels (see the module docstring)."""
    _check_plan_args(tile, overlap)
    if length < 1:
        raise ValueError(f"cannot tile an axis of length {length}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    return [min(i * stride, length - tile) for i in range(count)]


def balanced_tile(height: int, width: int, tile: int, overlap: int) -> int:
    """The smallest tile that covers ``height × width`` with as many tiles as ``tile`` (see the module docstring).

    >>> balanced_tile(512, 512, 256, 24), len(plan_tiles(512, 512, 187, 24))
    (187, 9)
    """
    _check_plan_args(tile, overlap)
    needed = 1
    for length in (height, width):
        count = len(axis_starts(length, tile, overlap))
        needed = max(needed, length if count == 1 else -(-(length + (count - 1) * overlap) // count))
    return min(tile, max(needed, overlap + 1))


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Tiles covering a ``height × width`` image, row by row (see the module docstring).

    >>> [(t.y, t.x) for t in plan_tiles(100, 60, 64, 16)]
    [(0, 0), (36, 0)]
    >>> [t.x for t in plan_tiles(10, 150, 64, 16)]
    [0, 48, 86]
    """
    rows = axis_starts(height, tile, overlap)
    cols = axis_starts(width, tile, overlap)
    tile_h, tile_w = min(tile, height), min(tile, width)
    return [Tile(y, x, tile_h, tile_w) for y in rows for x in cols]


def raised_cosine_ramp(length: int) -> np.ndarray:
    """``sin²(π/2 · (k + ½) / length)`` for ``k = 0 … length−1`` (float64, strictly inside (0, 1))."""
    k = np.arange(length, dtype=np.float64)
    return np.sin(0.5 * np.pi * (k + 0.5) / length) ** 2


def overlap_margin(overlap: int) -> int:
    """Pixels (LR) at a tile's inner edge that get weight 0: ``⌊overlap / 4⌋``."""
    return overlap // 4


def axis_window(size: int, margin: int, ramp: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D window of ``size`` samples: ``margin`` zeros, a rising ramp of ``ramp`` samples, then ones (start side).

    The end side mirrors the start side; a side without a ramp (on the image border) is all ones.
    """
    window = np.ones(size, dtype=np.float64)
    if margin + ramp <= 0:
        return window
    side = np.concatenate([np.zeros(margin), raised_cosine_ramp(ramp)])[:size]
    if ramp_start:
        window[: len(side)] *= side
    if ramp_end:
        window[size - len(side) :] *= side[::-1]
    return window


def tile_window(tile: Tile, height: int, width: int, overlap: int, scale: int = 1) -> np.ndarray:
    """Blending window of ``tile`` at ``scale`` × its LR size: float32 ``(height·scale, width·scale)`` of a tile.

    ``height``/``width`` are the LR image's; ``overlap`` is in LR pixels.
    """
    margin = overlap_margin(overlap)
    zeros, ramp = margin * scale, (overlap - 2 * margin) * scale
    rows = axis_window(tile.height * scale, zeros, ramp, tile.y > 0, tile.y + tile.height < height)
    cols = axis_window(tile.width * scale, zeros, ramp, tile.x > 0, tile.x + tile.width < width)
    return np.outer(rows, cols).astype(np.float32)


class Blender:
    """Accumulates windowed tiles and returns their normalised blend, ``Σ wᵢ·tileᵢ / Σ wᵢ``.

    ``add`` takes a ``(channels, h·scale, w·scale)`` output tile; ``result`` returns the
    ``(channels, height·scale, width·scale)`` float32 image. Windows depend only on a
    tile's size and which of its sides touch the border, so they are cached.
    """

    def __init__(self, height: int, width: int, overlap: int, scale: int, channels: int = 3) -> None:
        self.height, self.width, self.overlap, self.scale = height, width, overlap, scale
        self._sum = np.zeros((channels, height * scale, width * scale), dtype=np.float32)
        self._weight = np.zeros((height * scale, width * scale), dtype=np.float32)
        self._windows: dict[tuple[int, int, bool, bool, bool, bool], np.ndarray] = {}

    def window(self, tile: Tile) -> np.ndarray:
        key = (
            tile.height,
            tile.width,
            tile.y > 0,
            tile.x > 0,
            tile.y + tile.height < self.height,
            tile.x + tile.width < self.width,
        )
        if key not in self._windows:
            self._windows[key] = tile_window(tile, self.height, self.width, self.overlap, self.scale)
        return self._windows[key]

    def add(self, tile: Tile, output: np.ndarray) -> None:
        rows, cols = tile.slices(self.scale)
        window = self.window(tile)
        if output.shape[1:] != window.shape:
            raise ValueError(f"tile output {output.shape[1:]} does not match the ×{self.scale} tile {window.shape}")
        self._sum[:, rows, cols] += output * window
        self._weight[rows, cols] += window

    def result(self) -> np.ndarray:
        if not np.all(self._weight > 0):
            raise ValueError("the tiles added do not cover the image")
        return self._sum / self._weight
