"""Scenes of a video and the degradation estimate (IDR) each frame gets (numpy + OpenCV, no torch, no PyAV).

In a blind model the degradation belongs to the source, not to the frame: every frame of
a shot comes through the same camera, lens, scaler and encoder. :class:`SceneIDR` estimates
the IDR on the first frame of each scene and gives that estimate to every later frame of the
scene (and the :class:`~lightbsr.runtime.Upscaler` to every tile), so the restoration does
not flicker with per-frame estimates.

What is shared is the *global* part of the IDR: the arrays without pixel dimensions
(LightBSR's ``idr_channel``, KDSR's ``idr``), which describe the degradation. LightBSR's
``idr_spatial`` is per pixel and aligned with the frame's content, so in a moving shot the
first frame's map would sit on the wrong pixels: it is still estimated on every frame
(:func:`merge_idr`). For KDSR, whose IDR is global only, the estimator runs once per scene.

Modes (``--idr``): ``per-frame`` (every frame its own estimate, as images), ``per-scene``
(the default) and ``fixed`` (the first frame's global IDR for the whole video).

Scene cuts come from a cheap signal that needs no model: :class:`CutDetector` compares the
colour histogram of a small thumbnail of each frame with the previous frame's. A pan or a
moving object changes the histogram little; a cut to another shot changes it a lot.
Gradual transitions (fades, dissolves) are not detected as cuts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from lightbsr.errors import ConfigError
from lightbsr.runtime.backend import IDR

__all__ = [
    "DEFAULT_SCENE_THRESHOLD",
    "IDR_MODES",
    "CutDetector",
    "Scene",
    "SceneIDR",
    "histogram_distance",
    "merge_idr",
    "thumbnail_histogram",
]

IDR_MODES = ("per-frame", "per-scene", "fixed")

DEFAULT_SCENE_THRESHOLD = 0.2
"""Histogram distance (0–1) above which a frame starts a new scene (see :func:`histogram_distance`).

A pan moves a few percent of the pixels into and out of view, which moves at most that share
of the histogram; two different shots share little of it. Measured on training images, not on
the benchmark sets (``python -m lightbsr.runtime.scenes --images datasets/train/SunHays80``, and
``--images datasets/train/BSD200 --count 80``): 64×48 frames panning 1 or 4 pixels a frame stay
at most 0.136 apart; cuts between images are 0.215 apart at least, 0.90–0.99 at the median. A
missed cut costs more (a scene restored with another scene's estimate) than a spurious one (one
more estimate), so the threshold sits nearer the pans."""

THUMBNAIL_SIDE = 64
"""Longest side of the thumbnail the histogram is taken on (LR pixels)."""

_BINS = (8, 4, 4)  # hue, saturation, value


def thumbnail_histogram(frame: np.ndarray) -> np.ndarray:
    """The normalised HSV histogram (8 × 4 × 4 bins, sums to 1) of an RGB frame's thumbnail.

    ``frame`` is ``(H, W, 3)`` RGB, ``uint8`` or ``uint16``.
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ConfigError(f"expected an (H, W, 3) RGB frame, got shape {frame.shape}")
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise ConfigError(f"expected uint8 or uint16 frames, got {frame.dtype}")
    height, width = frame.shape[:2]
    shrink = THUMBNAIL_SIDE / max(height, width)
    if shrink < 1:
        size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV)  # H in 0–179
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(_BINS), [0, 180, 0, 256, 0, 256]).ravel()
    return hist / max(float(hist.sum()), 1.0)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance of two normalised histograms: the share of pixels that would change bins (0–1)."""
    return 0.5 * float(np.abs(a - b).sum())


class CutDetector:
    """Tells whether each frame starts a new scene: its histogram distance to the previous frame exceeds ``threshold``.

    The first frame starts the first scene.
    """

    def __init__(self, threshold: float = DEFAULT_SCENE_THRESHOLD) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"the scene threshold is a histogram distance in (0, 1], got {threshold}")
        self.threshold = threshold
        self._previous: np.ndarray | None = None

    def __call__(self, frame: np.ndarray) -> tuple[bool, float]:
        """(whether ``frame`` starts a new scene, its distance to the previous frame; 1.0 for the first)."""
        hist = thumbnail_histogram(frame)
        previous, self._previous = self._previous, hist
        if previous is None:
            return True, 1.0
        distance = histogram_distance(previous, hist)
        return distance > self.threshold, distance


def merge_idr(scene: IDR, frame: IDR | None) -> IDR:
    """The scene's global IDR arrays with the frame's per-pixel (4-D) ones (see the module docstring)."""
    out = {}
    for name, value in scene.items():
        if value.ndim == 4:
            if frame is None:
                raise ConfigError(f"the per-pixel IDR {name} needs the frame's own estimate")
            out[name] = frame[name]
        else:
            out[name] = value
    return out


@dataclass
class Scene:
    """One scene: frames ``start`` to ``end`` (inclusive, in decoding order) from ``time`` seconds."""

    start: int
    time: float
    cut_distance: float
    """The histogram distance that started it (1.0: the first scene)."""
    end: int = -1


@dataclass
class SceneIDR:
    """The IDR of each frame under ``mode``, and the scenes seen so far.

    ``estimate`` maps a frame to its IDR (:meth:`Upscaler.estimate_image`); ``None`` (a model
    without a separate estimator) is allowed in ``per-frame`` mode only, and :meth:`next` then
    returns ``None``: the upscaler estimates each frame itself. Call :meth:`next` once per
    frame, in order.
    """

    mode: str
    estimate: Callable[[np.ndarray], IDR] | None
    scenes: list[Scene] = field(default_factory=list)
    estimates: int = 0
    """How many times :attr:`estimate` ran."""
    _scene_idr: IDR | None = None
    _per_pixel: bool = False

    def __post_init__(self) -> None:
        if self.mode not in IDR_MODES:
            raise ConfigError(f"unknown IDR mode {self.mode!r}; choose from {', '.join(IDR_MODES)}")
        if self.estimate is None and self.mode != "per-frame":
            raise ConfigError(
                f"IDR mode {self.mode} reuses degradation estimates, which needs a model with a separate "
                "estimator (split graphs); use per-frame, or export the split graphs"
            )

    def next(self, frame: np.ndarray, index: int, time: float, cut: bool, distance: float) -> IDR | None:
        """The IDR for frame ``index`` (``cut``: the detector says it starts a new scene)."""
        if cut or not self.scenes:
            self.scenes.append(Scene(index, time, distance))
        self.scenes[-1].end = index
        if self.estimate is None:
            return None
        renew = self._scene_idr is None or self.mode == "per-frame" or (self.mode == "per-scene" and cut)
        if renew:
            self._scene_idr = self._estimate(frame)
            self._per_pixel = any(value.ndim == 4 for value in self._scene_idr.values())
            return self._scene_idr
        assert self._scene_idr is not None
        return merge_idr(self._scene_idr, self._estimate(frame)) if self._per_pixel else self._scene_idr

    def _estimate(self, frame: np.ndarray) -> IDR:
        assert self.estimate is not None
        self.estimates += 1
        return self.estimate(frame)


# --------------------------------------------------------------------------- calibration


def pan_distances(
    images: list[np.ndarray], frames: int, size: tuple[int, int], step: int
) -> tuple[list[float], list[float]]:
    """Histogram distances between consecutive frames of pans over each image, and across the cuts between them.

    Each image is panned diagonally (``step`` pixels a frame, ``frames`` frames of ``size`` (h, w));
    the pans follow one another, so consecutive images meet at a cut.
    """
    within: list[float] = []
    cuts: list[float] = []
    previous: np.ndarray | None = None
    height, width = size
    for image in images:
        for i in range(frames):
            frame = np.ascontiguousarray(image[i * step : i * step + height, i * step : i * step + width])
            if frame.shape[:2] != size:
                raise ConfigError(f"an image of {image.shape[1]}×{image.shape[0]} is too small for the pan")
            hist = thumbnail_histogram(frame)
            if previous is not None:
                (cuts if i == 0 else within).append(histogram_distance(previous, hist))
            previous = hist
    return within, cuts


def main(argv: list[str] | None = None) -> int:
    """``python -m lightbsr.runtime.scenes --images DIR``: the cut detector's distances on pans over images."""
    import argparse

    from lightbsr.evaluation import list_images, read_image_rgb8

    parser = argparse.ArgumentParser(prog="python -m lightbsr.runtime.scenes", description=main.__doc__)
    parser.add_argument("--images", required=True, help="a folder of images (not the benchmark sets)")
    parser.add_argument("--count", type=int, default=40, help="images used, in name order")
    parser.add_argument("--frames", type=int, default=16, help="frames per pan")
    parser.add_argument("--step", type=int, nargs="+", default=[1, 4], help="pan speeds, LR pixels a frame")
    parser.add_argument("--threshold", type=float, default=DEFAULT_SCENE_THRESHOLD)
    args = parser.parse_args(argv)
    images = []
    for path in list_images(args.images)[: args.count]:
        image = read_image_rgb8(path)  # halved, then 64×48 windows: small frames, as LR frames are
        images.append(cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA))
    for step in args.step:
        within, cuts = pan_distances(images, args.frames, (48, 64), step)
        print(
            f"pans of {step} px/frame over {len(images)} images: within scenes max {max(within):.3f} "
            f"(p99 {np.percentile(within, 99):.3f}, {sum(d > args.threshold for d in within)} of {len(within)} "
            f"over {args.threshold}); cuts min {min(cuts):.3f} (p5 {np.percentile(cuts, 5):.3f}, median "
            f"{np.median(cuts):.3f}, {sum(d <= args.threshold for d in cuts)} of {len(cuts)} missed)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
