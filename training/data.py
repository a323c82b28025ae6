"""Training data: HR images from a folder, random crops, and degradations synthesised on the device.

Read top to bottom, this module is the input pipeline of the trainer:

1. :func:`list_training_images` finds the HR images of a folder, recursively (a DF2K
   layout with ``DIV2K/…`` and ``Flickr2K/…`` subfolders works as is);
2. :class:`ImageStore` decodes them once (in a thread pool), keeps them as uint8 arrays
   in RAM up to a byte cap, and decodes the rest again on use;
3. :class:`CropDataset` turns a *sample id* into ``D`` random HR crops of one image that
   share one random dihedral transform (flips and 90° rotations), and draws that
   sample's degradation parameters (blur width(s), noise level) — a pure function of
   ``(seed, sample id)``, whatever the number of DataLoader workers or GPUs;
4. :class:`IterationBatches` lists the sample ids of each iteration for one rank: the
   global batch of iteration ``i`` is the ids ``[i·B, (i+1)·B)``, split between the ranks,
   so resuming at iteration ``i`` replays exactly the batches an uninterrupted run sees;
5. :func:`synthesize` runs the degradation model of :mod:`lightbsr.degradation` on the
   training device: per-sample kernels, reflection-padded blur, MATLAB-style bicubic
   downscaling, Gaussian noise, rounding to 8 bits.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from lightbsr.degradation import SETTINGS, anisotropic_kernels, degrade, isotropic_kernels
from lightbsr.errors import ConfigError, DatasetError, InputImageError
from lightbsr.evaluation import IMAGE_EXTENSIONS, read_image_rgb8

__all__ = [
    "CropDataset",
    "DegradedBatch",
    "ImageStore",
    "IterationBatches",
    "degradation_size",
    "list_training_images",
    "synthesize",
]


# --------------------------------------------------------------------------- images


def list_training_images(root: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``root`` (recursively), sorted by their path relative to ``root``.

    Hidden files and folders (names starting with ``.``) are skipped.

    Raises:
        DatasetError: ``root`` is not a folder or holds no images.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise DatasetError(f"training data folder {folder} does not exist or is not a folder")
    try:
        files = [
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            and p.is_file()
        ]
    except OSError as exc:
        raise DatasetError(f"cannot list training data folder {folder}: {exc.strerror or exc}") from exc
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


class ImageStore:
    """The decoded HR images of a dataset: uint8 ``(H, W, 3)`` RGB arrays.

    Every image is decoded once at start-up (in parallel threads) to check that it can
    give an HR patch of ``min_side``; images are kept in RAM while the total stays under
    ``cache_bytes``, the others are decoded again each time they are drawn. Images too
    small for a patch are left out (listed in :attr:`skipped`).

    DataLoader workers are forked processes: they share the cached arrays copy-on-write.
    """

    def __init__(
        self,
        files: Sequence[Path],
        min_side: int,
        cache_bytes: int,
        *,
        threads: int | None = None,
        progress: bool = True,
        root: Path | None = None,
    ) -> None:
        self.root = root
        self.files: list[Path] = []
        self.sizes: list[tuple[int, int]] = []
        self.skipped: list[Path] = []
        self._cache: dict[int, np.ndarray] = {}
        self.cached_bytes = 0
        workers = threads or min(16, os.cpu_count() or 1)
        with (
            ThreadPoolExecutor(max_workers=workers) as pool,
            tqdm(total=len(files), desc="decode training images", unit="img", disable=not progress) as bar,
        ):
            for path, img in zip(files, pool.map(_read_training_image, files), strict=True):
                bar.update(1)
                h, w = img.shape[:2]
                if min(h, w) < min_side:
                    self.skipped.append(path)
                    continue
                index = len(self.files)
                self.files.append(path)
                self.sizes.append((h, w))
                if self.cached_bytes + img.nbytes <= cache_bytes:
                    self._cache[index] = img
                    self.cached_bytes += img.nbytes
        if not self.files:
            raise DatasetError(
                f"none of the {len(files)} training images is at least {min_side}×{min_side} pixels (the HR patch)"
            )

    def __len__(self) -> int:
        return len(self.files)

    @property
    def cached(self) -> int:
        """How many images are held in RAM."""
        return len(self._cache)

    def get(self, index: int) -> np.ndarray:
        """Image ``index`` as a read-only-by-convention uint8 ``(H, W, 3)`` array."""
        img = self._cache.get(index)
        return img if img is not None else _read_training_image(self.files[index])

    def names(self) -> list[str]:
        """The image paths relative to the dataset root (or file names), in store order."""
        if self.root is None:
            return [p.name for p in self.files]
        return [p.relative_to(self.root).as_posix() for p in self.files]


def _read_training_image(path: Path) -> np.ndarray:
    try:
        return read_image_rgb8(path)
    except InputImageError as exc:
        raise DatasetError(str(exc)) from exc


# --------------------------------------------------------------------------- samples


def degradation_size(setting: int) -> int:
    """Length of a sample's degradation-parameter vector: ``[σ]`` or ``[λ1, λ2, θ, noise σ]``."""
    return 4 if SETTINGS[setting].anisotropic else 1


def _draw_degradation(rng: np.random.Generator, setting: int) -> np.ndarray:
    """One sample's degradation parameters, from the ranges of ``lightbsr.degradation.SETTINGS``."""
    spec = SETTINGS[setting]
    low, high = spec.width_range
    if not spec.anisotropic:
        return np.array([rng.uniform(low, high)], dtype=np.float32)
    noise_low, noise_high = spec.noise_range or (0.0, 0.0)
    l1, l2 = rng.uniform(low, high, size=2)
    return np.array([l1, l2, rng.uniform(0.0, math.pi), rng.uniform(noise_low, noise_high)], dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, 0, epoch]).permutation(n)


class CropDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Sample id → (``crops`` HR patches of one image, that sample's degradation parameters).

    Sample ``s`` reads image ``perm_e[s mod N]`` where ``perm_e`` is a seeded permutation
    of the ``N`` images for epoch ``e = s // N`` (every image once per epoch); the crop
    positions, the dihedral transform (one of 8, shared by the crops, as if the image were
    augmented before cropping) and the degradation parameters come from a generator
    seeded with ``(seed, s)``. Returns a uint8 ``(crops, 3, P, P)`` tensor and a float32
    vector of :func:`degradation_size` values.
    """

    def __init__(self, store: ImageStore, hr_patch: int, crops: int, setting: int, seed: int) -> None:
        if hr_patch < 1 or crops < 1:
            raise ConfigError(f"patch size and crops must be positive, got {hr_patch} and {crops}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.store = store
        self.hr_patch = hr_patch
        self.crops = crops
        self.setting = setting
        self.seed = seed

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, sample: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.store)
        epoch, position = divmod(int(sample), n)
        img = self.store.get(int(_permutation(self.seed, epoch, n)[position]))
        rng = np.random.default_rng([self.seed, 1, int(sample)])
        h, w = img.shape[:2]
        p = self.hr_patch
        ys = rng.integers(0, h - p + 1, size=self.crops)
        xs = rng.integers(0, w - p + 1, size=self.crops)
        transform = int(rng.integers(8))
        patches = np.stack([img[y : y + p, x : x + p] for y, x in zip(ys, xs, strict=True)])  # (D, P, P, 3)
        if transform & 4:
            patches = patches.transpose(0, 2, 1, 3)
        patches = np.rot90(patches, k=transform & 3, axes=(1, 2))
        crops = torch.from_numpy(np.ascontiguousarray(patches.transpose(0, 3, 1, 2)))
        return crops, torch.from_numpy(_draw_degradation(rng, self.setting))


class IterationBatches(Sampler[list[int]]):
    """The sample ids of iterations ``start … stop−1`` for one rank.

    Iteration ``i`` uses the global batch ``[i·B, (i+1)·B)``; rank ``r`` of ``world``
    takes the slice ``[i·B + r·b, i·B + (r+1)·b)`` with ``b = B / world``.
    """

    def __init__(self, start: int, stop: int, batch: int, rank: int = 0, world: int = 1) -> None:
        if batch % world:
            raise ConfigError(f"batch size {batch} is not divisible by the {world} processes")
        self.start, self.stop = start, stop
        self.batch, self.local = batch, batch // world
        self.rank = rank

    def __iter__(self) -> Iterator[list[int]]:
        for iteration in range(self.start, self.stop):
            first = iteration * self.batch + self.rank * self.local
            yield list(range(first, first + self.local))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


# --------------------------------------------------------------------------- degradation on the device


@dataclass
class DegradedBatch:
    """One training batch on the device.

    ``lr`` is ``(B, D, 3, P/s, P/s)`` and ``hr`` is ``(B, D, 3, P, P)``, both in [0, 1];
    ``kernels`` ``(B, k, k)`` and ``noise`` ``(B,)`` (0–255 units, setting 2) or ``None``
    are the degradation each image's crops share.
    """

    lr: torch.Tensor
    hr: torch.Tensor
    kernels: torch.Tensor
    noise: torch.Tensor | None


def synthesize(
    hr_u8: torch.Tensor,
    params: torch.Tensor,
    setting: int,
    scale: int,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> DegradedBatch:
    """Degrade a batch of uint8 HR crops on ``device`` with the papers' degradation model.

    Args:
        hr_u8: ``(B, D, 3, P, P)`` uint8 crops (from :class:`CropDataset`).
        params: ``(B, n)`` degradation parameters (see :func:`degradation_size`).
        setting: 1 (isotropic blur) or 2 (anisotropic blur and noise).
        scale: downscaling factor; ``P`` must be a multiple of it.
        device: where the work runs.
        generator: generator for the noise, on ``device`` (setting 2).
    """
    b, d, c, h, w = hr_u8.shape
    hr255 = hr_u8.to(device, non_blocking=True).float()
    params = params.to(device, non_blocking=True)
    noise = None
    if SETTINGS[setting].anisotropic:
        kernels = anisotropic_kernels(params[:, 0], params[:, 1], params[:, 2])
        noise = params[:, 3]
    else:
        kernels = isotropic_kernels(params[:, 0])
    lr255 = degrade(hr255.view(b, d * c, h, w), kernels, scale, noise, generator)
    return DegradedBatch(
        lr=(lr255 / 255.0).view(b, d, c, h // scale, w // scale),
        hr=hr255.div_(255.0),
        kernels=kernels,
        noise=noise,
    )
