"""Engines built from an ONNX model on first use, kept in the engine cache (no torch; tensorrt only to build).

:class:`EngineShapes` says which LR sizes the engines of a run must take (the tiler's tile and
batch, the whole image for a shared estimate) and gives each graph's optimization profile;
:func:`build_or_reuse` returns the cached engines of a model's graphs, building those missing
with :func:`lightbsr.tensorrt.builder.build_engine`. The runtime's TensorRT backend uses it when
given an ``.onnx`` model.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lightbsr import contract
from lightbsr.errors import BackendUnavailableError, ConfigError

from .engine import BuildFunction, BuildSettings, EngineCache, EngineSidecar, GpuInfo, ShapeRange
from .loader import TensorRTModule

__all__ = [
    "DEFAULT_IMAGE_SIDE",
    "DEFAULT_TILE",
    "MIN_SIDE",
    "EngineShapes",
    "build_or_reuse",
    "check_precision",
    "engine_shapes",
]

MIN_SIDE = 8
"""Smallest LR height/width of the profiles of engines built from an ONNX."""
DEFAULT_TILE = 512
"""Tile side (LR pixels) of engines built from an ONNX when no tile is given."""
DEFAULT_IMAGE_SIDE = 1024
"""Longest image side (LR pixels) the estimator engine takes when the images are not known in advance."""


def _round_up(side: int) -> int:
    """The next power of two ≥ ``side`` (at least 64): similar image sizes share one engine."""
    return max(64, 1 << math.ceil(math.log2(max(side, 1))))


@dataclass(frozen=True)
class EngineShapes:
    """The LR sizes engines built from an ONNX must take, and the profile of each graph that follows.

    ``image``: the longest image side the estimator sees in one go (a shared estimate);
    ``tile``/``batch``: the restorer's tile side and tiles per call (the tiler never asks for
    more: :attr:`TensorRTBackend.max_input_size`); ``shared_idr``: whether the estimator
    runs on whole images (else on tile batches, like the restorer).
    """

    image: int = DEFAULT_IMAGE_SIDE
    tile: int = DEFAULT_TILE
    batch: int = 1
    shared_idr: bool = True

    def __post_init__(self) -> None:
        for name in ("image", "tile"):
            if getattr(self, name) < MIN_SIDE:
                raise ConfigError(f"engine {name} side must be at least {MIN_SIDE}, got {getattr(self, name)}")
        if self.batch < 1:
            raise ConfigError(f"engine batch must be at least 1, got {self.batch}")

    def lr_range(self, graph: str) -> ShapeRange:
        """The ``lr`` min/opt/max of ``graph``'s single optimization profile (the other inputs follow from it)."""
        low = (1, 3, MIN_SIDE, MIN_SIDE)
        if graph == contract.GRAPH_ESTIMATOR and self.shared_idr:
            whole = (1, 3, self.image, self.image)
            return ShapeRange(low, whole, whole)
        tiles = (self.batch, 3, self.tile, self.tile)
        return ShapeRange(low, tiles, tiles)


def engine_shapes(
    image_sizes: Iterable[tuple[int, int]],
    *,
    tile: int | None = None,
    tile_batch: int = 1,
    shared_idr: bool = True,
) -> EngineShapes:
    """:class:`EngineShapes` for these LR image sizes ``(height, width)`` and tiling options.

    The longest side is rounded up to a power of two (≥ 64), so that runs on similar
    images reuse the cached engines; ``tile=None``: :data:`DEFAULT_TILE`; ``tile=0``
    (never tile): whole images, one at a time. The tile never exceeds the image side.
    """
    longest = max((max(int(h), int(w)) for h, w in image_sizes), default=DEFAULT_IMAGE_SIDE)
    image = _round_up(longest)
    if tile == 0:
        return EngineShapes(image, image, 1, shared_idr)
    side = DEFAULT_TILE if tile is None else max(tile, MIN_SIDE)
    return EngineShapes(image, min(side, image), tile_batch, shared_idr)


def check_precision(requested: str | None, actual: str, what: str) -> None:
    if requested is None or requested == actual or (requested == "fp16" and actual == "int8"):
        return
    raise ConfigError(
        f"{what} is {actual}; the tensorrt backend runs engines in the precision they were built with "
        f"(for {requested}: build from an ONNX with{'' if requested == 'fp16' else 'out'} --fp16, or "
        "convert it with `lightbsr quantize`)"
    )


def _default_builder(onnx: Path, engine: Path, settings: BuildSettings, device: int = 0) -> EngineSidecar:
    from lightbsr.tensorrt.builder import build_engine

    return build_engine(onnx, engine, settings, device=device)


def build_or_reuse(
    onnx_path: str | os.PathLike[str],
    *,
    shapes: EngineShapes,
    fp16: bool,
    cache: EngineCache,
    tensorrt: TensorRTModule,
    gpu: GpuInfo,
    builder: BuildFunction | None = None,
    report: Callable[[str], None] | None = None,
    precision: str | None = None,
    device: int = 0,
) -> tuple[dict[str, Path], list[Path]]:
    """Engines for an ONNX model's split graphs (else its full graph), from ``cache``, built where missing.

    Returns ({graph: engine path}, engines built by this call). ``builder`` builds one
    engine (default: :func:`lightbsr.tensorrt.builder.build_engine` on CUDA device ``device``, which
    ``gpu`` describes; the caller has made it current); ``report`` gets
    the message shown before each (slow) build. A flag the installed TensorRT cannot honour
    (``fp16`` on TensorRT 11 with an fp32 ONNX) is a ConfigError before anything is built.
    """
    if not tensorrt.can_build:
        raise BackendUnavailableError(
            f"building engines needs the full tensorrt package; {tensorrt.name} only runs prebuilt "
            "version-compatible engines (lightbsr build --version-compatible)"
        )
    from lightbsr.tensorrt.onnx_info import read_onnx_info
    from lightbsr.tensorrt.plan import plan_build

    graphs = contract.resolve_graphs(onnx_path).present()
    build = builder or functools.partial(_default_builder, device=device)
    say = report or (lambda text: print(f"lightbsr: {text}", file=sys.stderr, flush=True))
    built: list[Path] = []
    engines: dict[str, Path] = {}
    for graph, path in graphs.items():
        settings = BuildSettings(profiles=(shapes.lr_range(graph),), fp16=fp16)
        info = read_onnx_info(path)
        plan = plan_build(tensorrt.version, settings, info.precision, info.uint8_qdq)
        check_precision(precision, plan.precision, f"{path} ({info.precision} ONNX)")

        def build_one(onnx: Path, engine: Path, wanted: BuildSettings) -> EngineSidecar:
            say(f"building the TensorRT engine for {onnx.name} (first use: this can take minutes) → {engine}")
            sidecar = build(onnx, engine, wanted)
            built.append(engine)
            return sidecar

        engines[graph] = cache.get_or_build(path, settings, tensorrt_version=tensorrt.version, gpu=gpu, build=build_one)
    return engines, built
