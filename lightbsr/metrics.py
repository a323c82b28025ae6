"""Image-quality metrics of the papers' tables: Y-channel PSNR and SSIM.

All functions take NCHW float tensors with RGB values in [0, 1] (``sr`` and ``hr`` of
the same shape) and compare them image by image. The ``*_per_image`` functions return
one value per image, ``(N,)`` float64; :func:`psnr_y` and :func:`ssim_y` return the mean
over the batch of those per-image values (the papers average per-image PSNRs over a
dataset, not MSEs). For a single image (N = 1) the two agree.

Conventions (the reference code, DASR's ``calc_psnr(..., benchmark=True)``):

* ``Y = (65.738 R + 129.057 G + 25.064 B) / 256`` on 0–1 values, without the +16
  offset of BT.601's studio range: this is ``(Y₆₀₁ − 16) / 255``, so a Y difference is
  exactly the BT.601 Y difference over 255, and PSNR uses a peak of 1 (i.e. 255 on
  the 8-bit Y scale). Y is not rounded to 8 bits.
* ``shave`` pixels are removed from every border before computing the metric (the
  papers shave ``scale`` pixels).
* SSIM (Wang et al. 2004, as MATLAB's reference ``ssim_index`` and BasicSR's
  ``calculate_ssim(..., test_y_channel=True)``): on BT.601 Y in the 0–255 range **with**
  the +16 offset (``16 + 255·rgb_to_y``, where the offset matters through the luminance
  term), 11×11 Gaussian window with σ = 1.5, K1 = 0.01, K2 = 0.03, L = 255, valid-mode
  filtering (no padding), mean of the SSIM map; float64 throughout.
"""

from __future__ import annotations

import math

import torch

from lightbsr.errors import ConfigError

__all__ = [
    "Y_COEFFICIENTS",
    "psnr",
    "psnr_y",
    "psnr_y_per_image",
    "rgb_to_y",
    "ssim_y",
    "ssim_y_per_image",
]

Y_COEFFICIENTS = (65.738 / 256.0, 129.057 / 256.0, 25.064 / 256.0)
"""R, G, B weights of :func:`rgb_to_y` (BT.601 luma on 0–1 values, without the +16 offset)."""

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _check_pair(sr: torch.Tensor, hr: torch.Tensor, shave: int) -> None:
    for name, t in (("sr", sr), ("hr", hr)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[1] != 3:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ConfigError(f"{name} must be an (N, 3, H, W) RGB tensor, got {shape}")
    if sr.shape != hr.shape:
        raise ConfigError(f"sr and hr shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    if isinstance(shave, bool) or not isinstance(shave, int) or shave < 0:
        raise ConfigError(f"shave must be an integer >= 0, got {shave!r}")
    h, w = sr.shape[-2:]
    if h <= 2 * shave or w <= 2 * shave:
        raise ConfigError(f"a {h}×{w} image has nothing left after shaving {shave} pixels")


def _shave(img: torch.Tensor, shave: int) -> torch.Tensor:
    if shave == 0:
        return img
    return img[..., shave:-shave, shave:-shave]


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """Luma of ``(N, 3, H, W)`` RGB in [0, 1]: ``(N, 1, H, W)``, ``(65.738 R + 129.057 G + 25.064 B)/256``.

    No +16 offset: the result spans [0, 219/255]; see the module notes.
    """
    if img.dim() != 4 or img.shape[1] != 3:
        raise ConfigError(f"expected an (N, 3, H, W) RGB tensor, got {tuple(img.shape)}")
    weights = torch.tensor(Y_COEFFICIENTS, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return (img * weights).sum(dim=1, keepdim=True)


def psnr_y_per_image(sr: torch.Tensor, hr: torch.Tensor, shave: int = 0) -> torch.Tensor:
    """Y-channel PSNR (dB, peak 1) of each image, after shaving ``shave`` border pixels.

    Returns ``(N,)`` float64; identical images give ``inf``.
    """
    _check_pair(sr, hr, shave)
    diff = _shave(rgb_to_y(sr.double()) - rgb_to_y(hr.double()), shave)
    mse = diff.pow(2).mean(dim=(1, 2, 3))
    return -10.0 * torch.log10(mse)  # log10(0) = -inf -> +inf


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, shave: int = 0) -> float:
    """Mean over the batch of :func:`psnr_y_per_image` (``inf`` if any pair is identical)."""
    return float(psnr_y_per_image(sr, hr, shave).mean())


def _gaussian_filter(maps: torch.Tensor) -> torch.Tensor:
    """Valid-mode 11×11 Gaussian (σ = 1.5) filtering of ``(..., H, W)`` maps, as two 1-D passes.

    The window is ``g gᵀ`` with ``g`` the normalised 1-D Gaussian (OpenCV's
    ``getGaussianKernel(11, 1.5)``), so the separable form equals the 2-D filter. Each
    pass is a weighted sum of 11 shifted views (much faster than a float64 ``conv2d``
    on the CPU).
    """
    ax = torch.arange(_SSIM_WINDOW, dtype=torch.float64) - _SSIM_WINDOW // 2
    g = torch.exp(-(ax**2) / (2.0 * _SSIM_SIGMA**2))
    weights: list[float] = (g / g.sum()).tolist()
    h, w = maps.shape[-2:]
    out_h, out_w = h - _SSIM_WINDOW + 1, w - _SSIM_WINDOW + 1
    rows = weights[0] * maps[..., :out_h, :]
    for k in range(1, _SSIM_WINDOW):
        rows = rows + weights[k] * maps[..., k : k + out_h, :]
    out = weights[0] * rows[..., :out_w]
    for k in range(1, _SSIM_WINDOW):
        out = out + weights[k] * rows[..., k : k + out_w]
    return out


def ssim_y_per_image(sr: torch.Tensor, hr: torch.Tensor, shave: int = 0) -> torch.Tensor:
    """Y-channel SSIM of each image, after shaving ``shave`` border pixels: ``(N,)`` float64.

    The shaved images must be at least 11×11 (valid-mode filtering).
    """
    _check_pair(sr, hr, shave)
    x = _shave(16.0 + 255.0 * rgb_to_y(sr.double()), shave)
    y = _shave(16.0 + 255.0 * rgb_to_y(hr.double()), shave)
    if min(x.shape[-2:]) < _SSIM_WINDOW:
        raise ConfigError(f"SSIM needs at least {_SSIM_WINDOW}×{_SSIM_WINDOW} pixels after shaving")
    c1 = (_SSIM_K1 * 255.0) ** 2
    c2 = (_SSIM_K2 * 255.0) ** 2
    n = x.shape[0]
    mu_x, mu_y, xx, yy, xy = _gaussian_filter(torch.cat([x, y, x * x, y * y, x * y])).split(n)
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, shave: int = 0) -> float:
    """Mean over the batch of :func:`ssim_y_per_image`."""
    return float(ssim_y_per_image(sr, hr, shave).mean())


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR (dB) over all elements and channels of two same-shaped tensors.

    ``10·log10(data_range² / MSE)``, one MSE over the whole tensor (used to compare
    inference backends, not the papers' metric); identical tensors give ``inf``.
    """
    if a.shape != b.shape:
        raise ConfigError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not data_range > 0:
        raise ConfigError(f"data_range must be > 0, got {data_range!r}")
    if a.numel() == 0:
        raise ConfigError("cannot compute the PSNR of empty tensors")
    mse = float((a.double() - b.double()).pow(2).mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)
