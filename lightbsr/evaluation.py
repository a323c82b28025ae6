"""The papers' benchmark evaluation protocol (Table 3 of LightBSR, degradation setting 1).

For every HR image of a dataset folder and every kernel width σ:

1. the HR image (8-bit RGB) is cropped to a multiple of ``scale`` (bottom/right);
2. ``LR = degrade(HR, isotropic_kernel(σ), scale)``: 21×21 Gaussian blur with reflection
   padding, the reference code's MATLAB-style bicubic ×1/scale, round and clamp to 8 bits
   (no noise in setting 1);
3. ``SR = upscale_fn(LR / 255)``, clamped to [0, 1] and rounded to 8 bits;
4. Y-channel PSNR and SSIM (:mod:`lightbsr.metrics`) with ``scale`` pixels shaved on
   every border; the dataset figure is the mean of the per-image values.

With :func:`bicubic_upscale` this reproduces the papers' "Bicubic" row (Set5:
27.69 / 25.99 / 24.45 dB for σ = 1.2 / 2.4 / 3.6), which validates the protocol.

:func:`evaluate` returns an :class:`EvalResult` (per-image and mean scores per σ) that
serialises to JSON and renders as a Table-3-style text table; :func:`format_table`
renders several results (methods × datasets) side by side.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lightbsr.contract import check_sr
from lightbsr.degradation import crop_to_multiple, degrade, imresize, isotropic_kernel
from lightbsr.errors import ConfigError, DatasetError, InputImageError
from lightbsr.imageio import read_image_rgb8
from lightbsr.metrics import psnr_y_per_image, ssim_y_per_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "PAPER_SIGMAS",
    "EvalResult",
    "ImageScore",
    "UpscaleFn",
    "bicubic_upscale",
    "evaluate",
    "format_table",
    "list_images",
    "read_image_rgb8",
]

UpscaleFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps a ``(1, 3, h, w)`` float tensor in [0, 1] to ``(1, 3, scale·h, scale·w)``."""

PAPER_SIGMAS = (1.2, 2.4, 3.6)
"""Kernel widths of the papers' setting-1 benchmarks (Table 3)."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File name endings (case-insensitive) taken as images in a dataset folder."""

_SCHEMA = "lightbsr.eval/1"


# --------------------------------------------------------------------------- image reading


def list_images(dataset_dir: str | Path) -> list[Path]:
    """The image files of a dataset folder, sorted by name (not recursive).

    A folder with no images but an ``HR`` subfolder (a common benchmark layout) is
    read from that subfolder.

    Raises:
        DatasetError: the folder does not exist or holds no images.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a folder")

    def images_in(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)

    try:
        files = images_in(root)
        if not files and (root / "HR").is_dir():
            files = images_in(root / "HR")
    except OSError as exc:
        raise DatasetError(f"cannot list dataset folder {root}: {exc.strerror or exc}") from exc
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {root}")
    return files


# --------------------------------------------------------------------------- upscalers


def bicubic_upscale(scale: int = 4) -> UpscaleFn:
    """The papers' "Bicubic" baseline: MATLAB-style bicubic ×``scale`` of the LR image.

    Uses :func:`lightbsr.degradation.imresize` (the reference code's border handling).
    The returned function has a ``name`` attribute, ``"Bicubic"``.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")

    def upscale(lr: torch.Tensor) -> torch.Tensor:
        return imresize(lr, float(scale))

    upscale.name = "Bicubic"  # type: ignore[attr-defined]
    return upscale


# --------------------------------------------------------------------------- results


def _sigma_key(sigma: float) -> str:
    """The label of a kernel width: ``1.2`` -> ``"1.2"``, ``2.0`` -> ``"2.0"``."""
    return repr(float(sigma))


def _encode_float(value: float) -> float | str:
    """Strict JSON has no inf/nan: write them as ``"inf"``/``"nan"`` (PSNR of identical images is inf)."""
    return value if math.isfinite(value) else str(value)


@dataclass(frozen=True)
class ImageScore:
    """The scores of one image at one kernel width."""

    name: str
    psnr: float
    ssim: float


@dataclass
class EvalResult:
    """Scores of one method on one dataset: per image and per kernel width σ.

    ``scores`` maps each σ (in :attr:`sigmas` order) to the per-image scores, in the
    dataset's (sorted file name) order.
    """

    method: str
    dataset: str
    scale: int
    setting: int
    sigmas: tuple[float, ...]
    scores: dict[float, list[ImageScore]] = field(default_factory=dict)

    def mean_psnr(self, sigma: float) -> float:
        """Mean of the per-image Y-PSNRs (dB) at width ``sigma``."""
        return _mean([s.psnr for s in self._at(sigma)])

    def mean_ssim(self, sigma: float) -> float:
        """Mean of the per-image Y-SSIMs at width ``sigma``."""
        return _mean([s.ssim for s in self._at(sigma)])

    @property
    def images(self) -> list[str]:
        """Image names, in evaluation order."""
        first = self.scores[self.sigmas[0]] if self.sigmas else []
        return [s.name for s in first]

    def _at(self, sigma: float) -> list[ImageScore]:
        for key, values in self.scores.items():
            if math.isclose(key, sigma, rel_tol=0.0, abs_tol=1e-9):
                return values
        raise KeyError(f"no scores for sigma {sigma}; have {list(self.scores)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite floats as strings); ``mean`` is informative only."""
        return {
            "schema": _SCHEMA,
            "method": self.method,
            "dataset": self.dataset,
            "scale": self.scale,
            "setting": self.setting,
            "sigmas": list(self.sigmas),
            "mean": {
                _sigma_key(s): {"psnr": _encode_float(self.mean_psnr(s)), "ssim": _encode_float(self.mean_ssim(s))}
                for s in self.sigmas
            },
            "images": {
                _sigma_key(s): [
                    {"name": x.name, "psnr": _encode_float(x.psnr), "ssim": _encode_float(x.ssim)}
                    for x in self.scores[s]
                ]
                for s in self.sigmas
            },
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (see :meth:`to_dict`); :meth:`from_json` reads it back."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """The inverse of :meth:`to_dict`."""
        if data.get("schema") != _SCHEMA:
            raise ConfigError(f"not a lightbsr evaluation result (schema {data.get('schema')!r})")
        try:
            sigmas = tuple(float(s) for s in data["sigmas"])
            scores = {
                s: [
                    ImageScore(str(x["name"]), float(x["psnr"]), float(x["ssim"]))
                    for x in data["images"][_sigma_key(s)]
                ]
                for s in sigmas
            }
            return cls(
                method=str(data["method"]),
                dataset=str(data["dataset"]),
                scale=int(data["scale"]),
                setting=int(data["setting"]),
                sigmas=sigmas,
                scores=scores,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed evaluation result: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> EvalResult:
        """The inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"malformed evaluation result: {exc}") from exc
        return cls.from_dict(data)

    def table(self, ssim: bool = False) -> str:
        """This result as a one-row Table-3-style table (see :func:`format_table`)."""
        return format_table([self], ssim=ssim)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def format_table(results: Sequence[EvalResult], ssim: bool = False) -> str:
    """Render results as text in the layout of the papers' Table 3.

    One row per method, one column group per dataset (in order of first appearance),
    one column per kernel width; cells hold the mean PSNR (``27.69``), or
    ``PSNR/SSIM`` (``27.69/0.7904``) with ``ssim=True``.
    """
    if not results:
        return ""
    datasets: dict[str, list[float]] = {}
    for r in results:
        widths = datasets.setdefault(r.dataset, [])
        widths.extend(s for s in r.sigmas if not any(math.isclose(s, w) for w in widths))
    methods = list(dict.fromkeys(r.method for r in results))
    by_key = {(r.method, r.dataset): r for r in results}

    def cell(method: str, dataset: str, sigma: float) -> str:
        r = by_key.get((method, dataset))
        if r is None or not any(math.isclose(sigma, s) for s in r.sigmas):
            return "—"
        text = f"{r.mean_psnr(sigma):.2f}"
        return f"{text}/{r.mean_ssim(sigma):.4f}" if ssim else text

    rows = [[cell(m, d, s) for d, widths in datasets.items() for s in widths] for m in methods]
    width = max([len(c) for row in rows for c in row] + [5])
    label_width = max([len("Kernel width"), *(len(m) for m in methods)])

    def line(label: str, cells: list[str]) -> str:
        groups, i = [], 0
        for widths in datasets.values():
            groups.append(" ".join(c.rjust(width) for c in cells[i : i + len(widths)]))
            i += len(widths)
        return " | ".join([label.ljust(label_width), *groups])

    group_widths = [len(w) * (width + 1) - 1 for w in datasets.values()]
    header = " | ".join(
        ["Dataset".ljust(label_width), *(d.center(gw) for d, gw in zip(datasets, group_widths, strict=True))]
    )
    sigmas_line = line("Kernel width", [f"{s:g}" for widths in datasets.values() for s in widths])
    rule = "-+-".join(["-" * label_width, *("-" * gw for gw in group_widths)])
    scale_note = sorted({f"×{r.scale}" for r in results})
    title = f"Y-PSNR{' / SSIM' if ssim else ''} (dB), setting 1, {', '.join(scale_note)}"
    return "\n".join([title, header, sigmas_line, rule, *(line(m, row) for m, row in zip(methods, rows, strict=True))])


# --------------------------------------------------------------------------- the protocol


def _method_name(fn: UpscaleFn) -> str:
    name = getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return str(name)


def _to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float32 in 0–255 on ``device``."""
    return torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).to(device=device, dtype=torch.float32)


def evaluate(
    upscale_fn: UpscaleFn,
    dataset_dir: str | Path,
    scale: int = 4,
    sigmas: Sequence[float] = PAPER_SIGMAS,
    setting: int = 1,
    progress: bool = True,
    method: str | None = None,
    device: str | torch.device | None = None,
) -> EvalResult:
    """Run the papers' benchmark protocol (module docstring) on a folder of HR images.

    Args:
        upscale_fn: maps a ``(1, 3, h, w)`` float tensor in [0, 1] (on ``device``) to a
            ``(1, 3, scale·h, scale·w)`` tensor; called under ``torch.inference_mode``.
        dataset_dir: folder of HR images (see :func:`list_images`).
        scale: upscaling factor; HR is cropped to a multiple of it, ``scale`` pixels shaved.
        sigmas: isotropic kernel widths (setting 1).
        setting: degradation setting; only 1 (isotropic blur, no noise) is implemented.
        progress: show a tqdm progress bar on stderr.
        method: the name in tables; defaults to ``upscale_fn.name`` or its ``__name__``.
        device: where degradation and metrics run (CPU by default).

    Raises:
        DatasetError: the folder is missing, empty, or holds an unreadable image.
        ConfigError: bad scale, σ or setting, or ``upscale_fn`` returned a wrong shape.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")
    if setting != 1:
        raise ConfigError(
            f"evaluation of setting {setting!r} is not implemented: only setting 1 (isotropic blur, no noise)"
        )
    sigmas = tuple(dict.fromkeys(float(s) for s in sigmas))
    if not sigmas:
        raise ConfigError("no kernel widths given")
    kernels = {s: isotropic_kernel(s) for s in sigmas}  # validates every σ before any work
    # Reflection padding needs side > kernel radius; SSIM needs an 11×11 window after the shave.
    min_side = max(kernels[sigmas[0]].shape[-1] // 2 + 1, 2 * scale + 11)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    files = list_images(dataset_dir)
    result = EvalResult(
        method=method or _method_name(upscale_fn),
        dataset=Path(dataset_dir).name,
        scale=scale,
        setting=setting,
        sigmas=sigmas,
        scores={s: [] for s in sigmas},
    )
    bar = tqdm(total=len(files) * len(sigmas), desc=f"eval {result.dataset}", unit="img", disable=not progress)
    with bar, torch.inference_mode():
        for path in files:
            try:
                hr = crop_to_multiple(_to_tensor(read_image_rgb8(path), dev), scale)
            except InputImageError as exc:
                raise DatasetError(str(exc)) from exc
            if min(hr.shape[-2:]) < min_side:
                h, w = hr.shape[-2:]
                raise DatasetError(f"{path} is too small ({h}×{w}) for ×{scale} evaluation (min side {min_side})")
            hr01 = hr / 255.0
            for sigma in sigmas:
                lr = degrade(hr, kernels[sigma], scale)
                sr = upscale_fn(lr / 255.0)
                if not isinstance(sr, torch.Tensor):
                    raise ConfigError(f"upscale_fn returned a {type(sr).__name__}, not a tensor")
                check_sr(result.method, tuple(lr.shape), tuple(sr.shape), scale, bool(torch.isfinite(sr).all()))
                sr = sr.to(device=dev, dtype=torch.float32).clamp(0.0, 1.0).mul(255.0).round().div(255.0)
                score = ImageScore(
                    name=path.name,
                    psnr=float(psnr_y_per_image(sr, hr01, shave=scale)[0]),
                    ssim=float(ssim_y_per_image(sr, hr01, shave=scale)[0]),
                )
                result.scores[sigma].append(score)
                bar.update(1)
    return result
