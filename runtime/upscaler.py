"""``Upscaler``: one model, any backend, whole-image or seam-free tiled inference (no torch at import).

Shared degradation estimate. LightBSR and KDSR estimate the degradation (the IDR)
from the LR image before restoring it. The channel IDR (and KDSR's whole IDR) is a
global average over the image, so tiles that each estimate their own would each
restore under a different degradation, and would disagree where they meet. With
``shared_idr=True`` (the default) the estimator runs once on the whole LR image; each
tile then gets its LR crop, the matching crop of the per-pixel IDR (LightBSR's
``idr_spatial``, at LR resolution) and the global IDR unchanged. ``shared_idr=False``
estimates per tile, for comparison. The estimate's memory grows with the image (see
:mod:`lightbsr.runtime.memory`): where it does not fit in one go, a backend that can
(torch, LightBSR) computes the very same estimate tile by tile
(:meth:`Backend.estimate_in_tiles`); otherwise the image is refused with a clear error
rather than estimated differently.

Two ways to tile (``tiling``):

* ``"exact"`` — LightBSR on the torch backend: the restorer runs one stage at a time
  (:meth:`lightbsr.models.LightBSR.restore_in_tiles`) and only each stage's local work is
  tiled, with its receptive radius as context; the output equals whole-image output up
  to float rounding. Needed for LightBSR because its restorer also pools every
  adaptation block's features over the whole input (its channel attention), which a
  tile restored on its own can only do over itself. It keeps a few 64-channel maps of
  the LR image's size in memory (``tile_overlap`` and ``tile_batch`` do not apply).
* ``"blend"`` — every backend and model: tiles (:mod:`lightbsr.runtime.tiling`; the
  balanced tile, :func:`~lightbsr.runtime.tiling.balanced_tile`: as many tiles as ``tile``
  gives, spread evenly, so that no clamped last tile computes an overlap of nearly a tile) overlap
  by ``tile_overlap`` LR pixels, are restored on their own, batched ``tile_batch`` at a
  time, and blended with a raised-cosine window that leaves out the outer quarter of each
  overlap. Output approximates whole-image output: the networks see a cut edge within
  their receptive field, and a LightBSR tile pools over itself only; a larger tile or
  overlap brings them closer.

``"auto"`` (the default) is exact where it is available (torch backend, LightBSR, shared
IDR), else blend. With ``tile=None`` the tile size comes from the device's free memory
(the whole image if it fits); ``tile=0`` never tiles. A backend that takes inputs up to a
size only (:attr:`Backend.max_input_size`: TensorRT engines) gets tiles that fit, an
explicit larger tile being reduced with a warning. On an out-of-memory error the tile is
halved and the image is run again, with a warning, down to :data:`MIN_RETRY_TILE`.

A degradation estimate made elsewhere can be given (``idr=``, e.g. one per video scene,
:mod:`lightbsr.runtime.scenes`): it then replaces the image's own, for every tile.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightbsr import contract
from lightbsr.errors import ConfigError, LightBSRWarning, ModelFileError, OutOfMemoryError
from lightbsr.runtime import memory
from lightbsr.runtime.backend import IDR, Backend, Workload, load_backend
from lightbsr.runtime.tiling import Blender, balanced_tile, cap_tile, check_tile_options, plan_tiles

__all__ = ["MIN_RETRY_TILE", "TILINGS", "RunInfo", "Upscaler"]

TILINGS = ("auto", "exact", "blend")

MIN_RETRY_TILE = 16
"""Smallest tile the out-of-memory retry goes down to (LR pixels)."""

DEFAULT_OVERLAP = 24
"""Default tile overlap (LR pixels). With the trimmed window (zeros over the outer quarter of the overlap)
the pixels kept are ≥ 6 LR pixels from a cut edge and fully weighted ≥ 18 away. Measured with the
reference-vector LightBSR weights, tile 64, on the first three Set14 images (σ = 2.4): tiled vs whole
PSNR (clamped) 39.97 dB with overlap 16, 42.13 dB with 24, 41.40 dB with 32."""
Progress = Callable[[int, int], None]
"""Called with (tiles done, tiles in the image) after each batch."""

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as OpenCV's RGB2GRAY


@dataclass
class RunInfo:
    """How the last image was processed (for logs and ``--json``)."""

    height: int = 0
    width: int = 0
    tile: int | None = None
    """Tile size used (LR pixels; blend tiling: the balanced tile, at most the one asked for); ``None``: the whole
    image in one piece."""
    tile_overlap: int = 0
    tiles: int = 1
    retries: int = 0
    """How many times the tile was halved after running out of memory."""
    shared_idr: bool = True
    seconds: float = 0.0
    tiling: str | None = None
    """``"exact"`` or ``"blend"`` when tiled (``None``: the whole image in one piece)."""


class Upscaler:
    """Upscale images with a LightBSR/KDSR student on any backend.

    Args:
        model: a lightbsr checkpoint (``.safetensors``, torch backend), an ONNX model
            (``.onnx``, onnxruntime backend; its split graphs ``*.estimator.onnx`` /
            ``*.restorer.onnx`` are used when present), a TensorRT engine (``.engine``/``.plan``,
            tensorrt backend), ``None`` for the bundled default model, a torch model object
            (student with ``estimate``/``restore``) or a ready :class:`Backend`.
        backend: ``"auto"`` (from the model file's suffix), ``"torch"``, ``"onnxruntime"`` or ``"tensorrt"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        tile: tile size in LR pixels; ``None``: from free memory; ``0``: never tile.
        tile_overlap: overlap of neighbouring tiles in LR pixels; ``None``: :data:`DEFAULT_OVERLAP`,
            at most half the tile (an overlap given explicitly is kept, and must be smaller than
            ``tile``; it is also capped at half the tile when the tile is chosen or halved automatically).
        tile_batch: tiles per backend call.
        precision: ``"fp32"``, ``"fp16"``, ``"bf16"`` or ``None`` (fp32 for checkpoints, the
            graph's own precision for ONNX).
        shared_idr: estimate the degradation once per image (``True``) or per tile.
        tiling: ``"auto"``, ``"exact"`` or ``"blend"`` (see the module docstring).
        image_sizes: LR ``(height, width)`` of the images to come, when known in advance: a backend
            that compiles for fixed sizes (TensorRT engines built from an ONNX) sizes itself from them
            and the tiling options (:class:`~lightbsr.runtime.backend.Workload`).
        **backend_options: passed to the backend's ``load`` (e.g. ``providers`` for onnxruntime;
            ``threads`` for torch and onnxruntime, default: the CPUs this process may use, affinity and
            cgroup quota; idle threads sleep, see :mod:`lightbsr.hardware`).

    :meth:`upscale` takes ``(H, W)`` gray, ``(H, W, 2)`` gray + alpha, ``(H, W, 3)`` RGB or
    ``(H, W, 4)`` RGBA arrays, ``uint8``, ``uint16`` or float in [0, 1], and returns the
    same layout and dtype at ``scale`` × the size, clamped to the dtype's range (floats to
    [0, 1]). Gray is upscaled as RGB and turned back to gray (BT.601 luma); alpha is
    upscaled on its own with bicubic interpolation, not by the network.
    :meth:`upscale_lr` is the float core: ``(3, H, W)`` → ``(3, sH, sW)``, unclamped.
    Both take an optional ``idr`` (from :meth:`estimate_image` / :meth:`estimate_lr`, possibly of
    another image of the same size) to restore with instead of estimating the image's own.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Backend | Any | None = None,
        *,
        backend: str = "auto",
        device: str = "auto",
        tile: int | None = None,
        tile_overlap: int | None = None,
        tile_batch: int = 1,
        precision: str | None = None,
        shared_idr: bool = True,
        tiling: str = "auto",
        image_sizes: Sequence[tuple[int, int]] = (),
        **backend_options: Any,
    ) -> None:
        try:
            check_tile_options(tile, tile_overlap, tile_batch)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if tiling not in TILINGS:
            raise ConfigError(f"unknown tiling {tiling!r}; choose from {', '.join(TILINGS)}")
        if isinstance(model, (str, os.PathLike)):
            backend_options.setdefault("workload", Workload(tuple(image_sizes), tile, tile_batch, shared_idr))
        self.backend = _open_backend(model, backend, device, precision, backend_options)
        exact = shared_idr and self.backend.can_restore_in_tiles
        if tiling == "exact" and not exact:
            raise ConfigError(
                "exact tiling needs a LightBSR model on the torch backend with a shared IDR; "
                f"this is {self.backend.family} on {self.backend.name}"
                + ("" if shared_idr else " with per-tile IDRs")
                + " (use tiling blend)"
            )
        self.tiling = "exact" if tiling != "blend" and exact else "blend"
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.tile_batch = tile_batch
        self.shared_idr = shared_idr
        self.last_run = RunInfo()

    # ------------------------------------------------------------------ properties

    @property
    def scale(self) -> int:
        return self.backend.scale

    @property
    def family(self) -> str:
        return self.backend.family

    def describe(self) -> dict[str, Any]:
        return {
            **self.backend.describe(),
            "tile": self.tile,
            "tile_overlap": self.tile_overlap,
            "tile_batch": self.tile_batch,
            "shared_idr": self.shared_idr,
            "tiling": self.tiling,
        }

    # ------------------------------------------------------------------ lower level

    def estimate(self, lr: np.ndarray) -> IDR:
        """The backend's estimate of an ``(N, 3, H, W)`` float32 batch."""
        return self.backend.estimate(np.asarray(lr, dtype=np.float32))

    def restore(self, lr: np.ndarray, idr: IDR) -> np.ndarray:
        """The backend's restoration of an ``(N, 3, H, W)`` float32 batch with its IDR."""
        return self.backend.restore(np.asarray(lr, dtype=np.float32), idr)

    def estimate_lr(self, lr: np.ndarray) -> IDR:
        """The shared degradation estimate of a ``(3, H, W)`` float32 image, as :meth:`upscale_lr` makes it."""
        lr = _check_lr(lr)
        if not self.backend.can_split:
            raise ModelFileError(
                f"the {self.backend.name} model has no separate estimator graph, so its degradation estimate "
                "cannot be reused (export the split graphs)"
            )
        return self._shared_estimate(lr)

    def estimate_image(self, image: np.ndarray) -> IDR:
        """:meth:`estimate_lr` of an image array laid out as :meth:`upscale` takes it."""
        return self.estimate_lr(_image_to_lr(np.asarray(image))[0])

    # ------------------------------------------------------------------ images

    def upscale(self, image: np.ndarray, progress: Progress | None = None, idr: IDR | None = None) -> np.ndarray:
        """Upscale an image array (see the class docstring for the layouts and dtypes)."""
        array = np.asarray(image)
        lr, peak = _image_to_lr(array)
        dtype = array.dtype
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        channels = 1 if array.ndim == 2 else array.shape[2]
        gray = channels in (1, 2)
        sr = np.clip(self.upscale_lr(lr, progress, idr), 0.0, 1.0)
        out = np.tensordot(_LUMA, sr, axes=1) if gray else sr.transpose(1, 2, 0)
        out = _from_unit(out, dtype, peak)
        if channels in (2, 4):
            from lightbsr.imageio import resize_alpha

            out = np.dstack([out, resize_alpha(np.ascontiguousarray(array[:, :, -1]), self.scale)])
        return out

    def upscale_lr(self, lr: np.ndarray, progress: Progress | None = None, idr: IDR | None = None) -> np.ndarray:
        """``(3, H, W)`` float32 RGB in [0, 1] → ``(3, scale·H, scale·W)`` float32, unclamped.

        ``idr``: restore with this degradation estimate (shared by every tile) instead of the image's own.
        """
        lr = _check_lr(lr)
        start = time.perf_counter()
        _, height, width = lr.shape
        if idr is not None:
            if not self.shared_idr:
                raise ConfigError(
                    "a given degradation estimate is shared by every tile; this upscaler estimates per tile"
                )
            for name, value in idr.items():
                if value.ndim == 4 and value.shape[-2:] != (height, width):
                    raise ConfigError(
                        f"the per-pixel degradation estimate {name} is {value.shape[-1]}×{value.shape[-2]}; "
                        f"the image is {width}×{height}"
                    )
        tile, overlap = self._initial_tile(height, width)
        retries = 0
        estimate: list[IDR] = [] if idr is None else [idr]  # the shared estimate, kept across out-of-memory retries
        while True:
            try:
                sr, tiles, used = self._run(lr, tile, overlap, progress, estimate)
                break
            except OutOfMemoryError:
                raise
            except Exception as err:
                if not self.backend.is_out_of_memory(err):
                    raise
                self.backend.release_memory()
                current = tile if tile else max(height, width)
                smaller = current // 2
                if smaller < MIN_RETRY_TILE:
                    raise OutOfMemoryError(
                        f"out of memory on {self.backend.device} even with {current}×{current} tiles"
                    ) from err
                overlap = min(overlap, smaller // 2)
                warnings.warn(
                    f"out of memory with {current}-pixel tiles on {self.backend.device}; "
                    f"retrying with tile {smaller}, overlap {overlap}",
                    LightBSRWarning,
                    stacklevel=2,
                )
                tile, retries = smaller, retries + 1
        exact = tile is not None and self.tiling == "exact"
        self.last_run = RunInfo(
            height,
            width,
            used,
            overlap if tile and not exact else 0,
            tiles,
            retries,
            self.shared_idr,
            time.perf_counter() - start,
            None if tile is None else self.tiling,
        )
        return sr

    # ------------------------------------------------------------------ internals

    def _checked(self, sr: np.ndarray, lr: np.ndarray) -> np.ndarray:
        """``sr`` if it is ``scale`` × ``lr`` and all finite (every backend call, every tile), else one-line error."""
        finite = bool(np.isfinite(sr).all())
        contract.check_sr(f"the {self.backend.name} backend", lr.shape, np.shape(sr), self.scale, finite)
        return sr

    def _initial_tile(self, height: int, width: int) -> tuple[int | None, int]:
        """(tile or None for the whole image, overlap)."""
        if self.tile == 0:
            return None, 0
        if self.tile is not None:
            tile = self.tile
            overlap = self.tile_overlap if self.tile_overlap is not None else min(DEFAULT_OVERLAP, tile // 2)
        else:
            auto = memory.auto_tile(
                height,
                width,
                self.family,
                self.backend.free_memory(),
                precision=self.backend.precision,
                batch=self.tile_batch,
                device_kind=self.backend.device_kind,
            )
            given = self.tile_overlap if self.tile_overlap is not None else DEFAULT_OVERLAP
            if auto is None and not self._fits(height, width):
                auto = max(height, width)  # capped just below
            if auto is None:
                return None, 0
            tile, overlap = auto, min(given, auto // 2)
        if tile >= height and tile >= width and self._fits(height, width):
            return None, 0  # one tile is the whole image
        limit = self.backend.max_input_size
        if limit is not None:
            asked = tile
            tile, overlap, capped = cap_tile(tile, overlap, *limit)
            if capped and self.tile is not None:
                warnings.warn(
                    f"tile {asked} is larger than the {self.backend.name} backend takes "
                    f"({limit[1]}×{limit[0]} at most); using tile {tile}",
                    LightBSRWarning,
                    stacklevel=3,
                )
        return tile, overlap

    def _fits(self, height: int, width: int) -> bool:
        """Whether the backend takes an LR image of this size in one call (:attr:`Backend.max_input_size`)."""
        limit = self.backend.max_input_size
        return limit is None or (height <= limit[0] and width <= limit[1])

    def _shared_estimate(self, lr: np.ndarray) -> IDR:
        """The whole image's IDR: in one go, or tile by tile where the backend can and one go does not fit."""
        _, height, width = lr.shape
        need = memory.estimate_bytes(self.family, height * width, self.backend.precision)
        free = self.backend.free_memory()
        if free is None or need <= free:
            try:
                return self.backend.estimate(lr[None])
            except Exception as err:
                if not self.backend.is_out_of_memory(err):
                    raise
                self.backend.release_memory()
                if not self.backend.can_estimate_in_tiles:
                    raise OutOfMemoryError(
                        f"out of memory estimating the degradation of the whole {width}×{height} image on "
                        f"{self.backend.device}; use per-tile estimates (--no-shared-idr) or a smaller image"
                    ) from err
        elif not self.backend.can_estimate_in_tiles:
            raise OutOfMemoryError(
                f"the degradation estimate of a {width}×{height} image needs about {need / 2**30:.1f} GiB "
                f"and {self.backend.device} has {free / 2**30:.1f} GiB free; use per-tile estimates "
                "(--no-shared-idr) or a smaller image"
            )
        tile = memory.estimate_tile(self.family, free, self.backend.precision)
        return self.backend.estimate_in_tiles(lr[None], tile)

    def _run(
        self, lr: np.ndarray, tile: int | None, overlap: int, progress: Progress | None, estimate: list[IDR]
    ) -> tuple[np.ndarray, int, int | None]:
        """(SR, tiles, the tile used): blend tiles are :func:`balanced_tile` s of ``tile`` (as many, less overlap)."""
        _, height, width = lr.shape
        if tile is None:
            whole = lr[None]
            out = self.backend.forward(whole) if not estimate else self.backend.restore(whole, estimate[0])
            sr = self._checked(out, whole)[0]
            if progress:
                progress(1, 1)
            return sr, 1, None
        if self.shared_idr and not estimate:
            estimate.append(self._shared_estimate(lr))
        idr = estimate[0] if self.shared_idr else None
        if idr is not None and self.tiling == "exact":
            sr = self._checked(self.backend.restore_in_tiles(lr[None], idr, tile, progress), lr[None])[0]
            return sr, -(-height // tile) * -(-width // tile), tile
        tile = balanced_tile(height, width, tile, overlap)
        tiles = plan_tiles(height, width, tile, overlap)
        blender = Blender(height, width, overlap, self.scale)
        for first in range(0, len(tiles), self.tile_batch):
            batch = tiles[first : first + self.tile_batch]
            crops = [t.slices() for t in batch]
            lr_batch = np.stack([lr[:, rows, cols] for rows, cols in crops])
            if idr is None:
                out = self.backend.forward(lr_batch)
            else:
                out = self.backend.restore(lr_batch, _crop_idr(idr, crops))
            self._checked(out, lr_batch)
            for t, tile_out in zip(batch, out, strict=True):
                blender.add(t, tile_out)
            if progress:
                progress(first + len(batch), len(tiles))
        return blender.result(), len(tiles), tile


def _image_to_lr(array: np.ndarray) -> tuple[np.ndarray, float]:
    """An image array (see :class:`Upscaler`) → ``(3, H, W)`` float32 RGB in [0, 1] (gray repeated), and its peak."""
    dtype = array.dtype
    if dtype == np.uint8 or dtype == np.uint16:
        peak = float(np.iinfo(dtype).max)
    elif np.issubdtype(dtype, np.floating):
        peak = 1.0
    else:
        raise ConfigError(f"cannot upscale {dtype} pixels; use uint8, uint16 or float in [0, 1]")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise ConfigError(f"cannot upscale an array of shape {array.shape}; expected (H, W[, 2|3|4])")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ConfigError(f"cannot upscale an empty image of shape {array.shape}")
    channels = 1 if array.ndim == 2 else array.shape[2]
    color = array if channels == 1 else array[:, :, 0] if channels == 2 else array[:, :, :3]
    lr = color.astype(np.float32) / np.float32(peak)
    lr = np.broadcast_to(lr[None], (3, *lr.shape)) if channels in (1, 2) else lr.transpose(2, 0, 1)
    return lr, peak


def _check_lr(lr: np.ndarray) -> np.ndarray:
    lr = np.ascontiguousarray(lr, dtype=np.float32)
    if lr.ndim != 3 or lr.shape[0] != 3 or 0 in lr.shape:
        raise ConfigError(f"lr must be a (3, H, W) array, got shape {lr.shape}")
    return lr


def _crop_idr(idr: IDR, crops: list[tuple[slice, slice]]) -> IDR:
    """The IDR of each crop: per-pixel (4-D) tensors are cropped, global ones repeated."""
    out = {}
    for name, value in idr.items():
        if value.ndim == 4:
            out[name] = np.stack([value[0, :, rows, cols] for rows, cols in crops])
        else:
            out[name] = np.repeat(value[:1], len(crops), axis=0)
    return out


def _from_unit(values: np.ndarray, dtype: np.dtype, peak: float) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return np.round(values * peak).astype(dtype)
    return values.astype(dtype)


def _open_backend(model: Any, backend: str, device: str, precision: str | None, options: dict[str, Any]) -> Backend:
    if isinstance(model, Backend):
        if backend not in ("auto", model.name):
            raise ConfigError(f"a ready {model.name} backend was given, but backend={backend!r}")
        return model
    if model is None:
        from lightbsr.weights import default_checkpoint

        model = default_checkpoint()  # raises a clear ConfigError while no weights are bundled
    if isinstance(model, (str, os.PathLike)):
        return load_backend(backend, model, device=device, precision=precision, **options)
    if hasattr(model, "estimate") and hasattr(model, "restore"):
        if backend not in ("auto", "torch"):
            raise ConfigError(f"a torch model object runs on the torch backend, not {backend!r}")
        from lightbsr.runtime import torch_backend

        return torch_backend.load(model, device=device, precision=precision, **options)
    raise ConfigError(f"cannot upscale with a {type(model).__name__}; pass a model file path")
