"""The classical blind-SR degradation model of LightBSR and KDSR.

``LR = round_clamp( imresize( HR ⊛ k, 1/s ) + n )``, with HR and LR in the 0–255 range
(float tensors, NCHW). Read top to bottom, this module is the pipeline:

1. blur kernels: 21×21 Gaussians on the grid ``(i − size//2, j − size//2)``, isotropic
   (width σ) or anisotropic (std-devs λ1, λ2 along principal axes rotated by θ),
   single or batched, and random kernels of the papers' two training settings;
2. :func:`blur`: reflection padding of ``size//2``, then a per-image or per-sample
   correlation (the kernels are point-symmetric, so correlation = convolution);
3. :func:`imresize`: MATLAB's ``imresize`` bicubic (a = −0.5), antialiased when
   downscaling, written by hand since no library reproduces it exactly;
4. :func:`add_noise` (Gaussian, σ in 0–255 units) and :func:`round_clamp`;
5. :func:`degrade` composes them; :func:`benchmark_pair` is the papers' benchmark
   protocol (HR cropped to a multiple of the scale, then degraded);
6. :func:`kernel_pca`: the teacher's PCA basis, made as the authors' code makes it (uncentred,
   broad anisotropic kernels, seeded), for its degradation reference prior (DRP = flattened
   kernel @ basis.T).

Conventions, fixed by the reference vectors of the authors' code
(``tests/data/reference/degradation.*``):

* the kernel is indexed ``kernel[i, j]`` with ``y = i − size//2`` (rows, downwards) and
  ``x = j − size//2`` (columns); the first principal axis (std-dev λ1) points along
  ``(x, y) = (cos θ, sin θ)``, i.e. ``U = [[cos θ, −sin θ], [sin θ, cos θ]]`` acting on
  ``(x, y)`` and ``Σ = U·diag(λ1², λ2²)·Uᵀ``. Because ``y`` points down, a positive θ
  turns the λ1 axis clockwise on screen.
* :func:`imresize` follows MATLAB's ``contributions`` (height first, output
  ``ceil(H·scale) × ceil(W·scale)``) except at the borders: like the reference code it
  clamps out-of-range taps to the edge pixel (``padding="replicate"``) where MATLAB
  mirrors them (``padding="symmetric"``, available). Only the replicate form reproduces
  the reference vectors; both give the papers' Bicubic PSNRs to 0.01 dB.
* :func:`round_clamp` rounds half to even (``torch.round``), as the reference code.

Every function works on any device: tensors are created on the device of the inputs
(or the ``device`` argument), and random draws use the given ``torch.Generator``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lightbsr.errors import ConfigError

__all__ = [
    "KERNEL_SIZE",
    "SETTINGS",
    "KernelSetting",
    "RandomKernels",
    "add_noise",
    "anisotropic_kernel",
    "anisotropic_kernels",
    "benchmark_pair",
    "blur",
    "crop_to_multiple",
    "cubic",
    "degrade",
    "imresize",
    "isotropic_kernel",
    "isotropic_kernels",
    "kernel_pca",
    "random_kernels",
    "round_clamp",
]

KERNEL_SIZE = 21
"""Side of the blur kernels of both papers."""


class KernelSetting(NamedTuple):
    """The ranges of one of the papers' training degradation settings (×4)."""

    anisotropic: bool
    width_range: tuple[float, float]
    """σ (isotropic) or λ1, λ2 (anisotropic) ~ U(low, high)."""
    noise_range: tuple[float, float] | None
    """Noise σ ~ U(low, high) in 0–255 units, or ``None`` for no noise."""


SETTINGS: dict[int, KernelSetting] = {
    1: KernelSetting(anisotropic=False, width_range=(0.2, 4.0), noise_range=None),
    2: KernelSetting(anisotropic=True, width_range=(0.2, 4.0), noise_range=(0.0, 25.0)),
}
"""Setting 1: isotropic σ ~ U(0.2, 4), no noise. Setting 2: anisotropic λ1, λ2 ~ U(0.2, 4),
θ ~ U(0, π), noise σ ~ U(0, 25)."""


# --------------------------------------------------------------------------- argument checks


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ConfigError(f"kernel size must be a positive odd integer, got {size!r}")
    return size


def _check_positive(name: str, value: float | torch.Tensor) -> None:
    values = torch.as_tensor(value)
    if values.numel() == 0:
        raise ConfigError(f"{name} is empty")
    if not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
        raise ConfigError(f"{name} must be finite and > 0, got {_show(values)}")


def _check_finite(name: str, value: float | torch.Tensor) -> None:
    if not bool(torch.isfinite(torch.as_tensor(value)).all()):
        raise ConfigError(f"{name} must be finite, got {_show(torch.as_tensor(value))}")


def _show(values: torch.Tensor) -> str:
    return repr(values.item()) if values.numel() == 1 else f"a tensor with min {values.min().item()!r}"


def _check_setting(setting: int) -> KernelSetting:
    if setting not in SETTINGS:
        raise ConfigError(f"unknown degradation setting {setting!r}; known: {sorted(SETTINGS)}")
    return SETTINGS[setting]


def _check_image(img: torch.Tensor, name: str = "img") -> None:
    if not isinstance(img, torch.Tensor) or img.dim() != 4:
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ConfigError(f"{name} must be an NCHW tensor, got {shape}")
    if not img.is_floating_point():
        raise ConfigError(f"{name} must be a floating-point tensor (0–255 values), got {img.dtype}")


# --------------------------------------------------------------------------- kernels


def _grid(size: int, device: torch.device | str | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` coordinates of a size×size kernel: ``x`` varies along columns, ``y`` along rows."""
    ax = torch.arange(size, device=device, dtype=dtype) - size // 2
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    return x, y


def _normalise(kernels: torch.Tensor, widths: str) -> torch.Tensor:
    """Kernels scaled to sum 1; a width so small that the kernel underflows (σ = 1e-30) is refused."""
    out = kernels / kernels.sum(dim=(-2, -1), keepdim=True)
    if not bool(torch.isfinite(out).all()):
        raise ConfigError(f"{widths} too small for a float32 kernel (use widths of about 0.1 pixel or more)")
    return out


def isotropic_kernels(sigmas: torch.Tensor, size: int = KERNEL_SIZE) -> torch.Tensor:
    """Isotropic Gaussian kernels, one per width.

    Args:
        sigmas: ``(B,)`` widths (std-devs in pixels), all > 0.
        size: odd kernel side.

    Returns:
        ``(B, size, size)`` float32 kernels on ``sigmas.device``, each summing to 1.
    """
    _check_size(size)
    sigmas = torch.as_tensor(sigmas).reshape(-1)
    _check_positive("sigma", sigmas)
    sigmas = sigmas.to(torch.float32)
    x, y = _grid(size, sigmas.device, torch.float32)
    s2 = (sigmas**2).view(-1, 1, 1)
    return _normalise(torch.exp(-(x**2 + y**2) / (2.0 * s2)), f"sigma {_show(sigmas)} is")


def isotropic_kernel(sigma: float, size: int = KERNEL_SIZE) -> torch.Tensor:
    """One isotropic Gaussian kernel of width ``sigma``: a ``(size, size)`` float32 tensor summing to 1."""
    _check_positive("sigma", sigma)
    return isotropic_kernels(torch.tensor([float(sigma)]), size)[0]


def anisotropic_kernels(
    lambda1: torch.Tensor, lambda2: torch.Tensor, theta: torch.Tensor, size: int = KERNEL_SIZE
) -> torch.Tensor:
    """Anisotropic Gaussian kernels with covariance ``U·diag(λ1², λ2²)·Uᵀ``.

    ``U`` is the rotation by ``theta`` (radians) acting on ``(x, y) = (column, row)``
    offsets, so the λ1 axis points along ``(cos θ, sin θ)``. The exponent is evaluated
    through the principal axes, ``((x cos θ + y sin θ)/λ1)² + ((−x sin θ + y cos θ)/λ2)²``,
    which is ``pᵀ Σ⁻¹ p`` without a matrix inverse.

    Args:
        lambda1, lambda2: ``(B,)`` std-devs along the two principal axes, all > 0.
        theta: ``(B,)`` rotation angles in radians.
        size: odd kernel side.

    Returns:
        ``(B, size, size)`` float32 kernels on ``lambda1.device``, each summing to 1.
    """
    _check_size(size)
    l1 = torch.as_tensor(lambda1).reshape(-1)
    l2 = torch.as_tensor(lambda2).reshape(-1)
    th = torch.as_tensor(theta).reshape(-1)
    if not l1.shape == l2.shape == th.shape:
        raise ConfigError(f"lambda1, lambda2, theta must have the same length, got {len(l1)}, {len(l2)}, {len(th)}")
    _check_positive("lambda1", l1)
    _check_positive("lambda2", l2)
    _check_finite("theta", th)
    device = l1.device
    l1, l2, th = (t.to(device=device, dtype=torch.float32).view(-1, 1, 1) for t in (l1, l2, th))
    x, y = _grid(size, device, torch.float32)
    cos, sin = torch.cos(th), torch.sin(th)
    along1 = (x * cos + y * sin) / l1
    along2 = (-x * sin + y * cos) / l2
    return _normalise(torch.exp(-0.5 * (along1**2 + along2**2)), "lambda1/lambda2 are")


def anisotropic_kernel(lambda1: float, lambda2: float, theta: float, size: int = KERNEL_SIZE) -> torch.Tensor:
    """One anisotropic Gaussian kernel (``theta`` in radians); see :func:`anisotropic_kernels`."""
    _check_positive("lambda1", lambda1)
    _check_positive("lambda2", lambda2)
    _check_finite("theta", theta)
    l1, l2, th = (torch.tensor([float(v)]) for v in (lambda1, lambda2, theta))
    return anisotropic_kernels(l1, l2, th, size=size)[0]


class RandomKernels(NamedTuple):
    """Random degradations of a training batch (all tensors on the requested device)."""

    kernels: torch.Tensor
    """``(B, size, size)`` float32 kernels, each summing to 1."""
    noise_sigmas: torch.Tensor | None
    """``(B,)`` noise std-devs in 0–255 units (setting 2), or ``None`` (setting 1)."""
    params: torch.Tensor
    """``(B, 1)`` σ (setting 1) or ``(B, 3)`` (λ1, λ2, θ) (setting 2) the kernels were made from."""


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device | str | None
) -> torch.Tensor:
    """``n`` draws of U(low, high), drawn on the generator's device and moved to ``device``."""
    draw_device = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=draw_device)
    return (u * (high - low) + low).to(device)


def random_kernels(
    batch: int,
    setting: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    size: int = KERNEL_SIZE,
) -> RandomKernels:
    """Random kernels (and noise levels) of one of the papers' training settings.

    Setting 1: isotropic, σ ~ U(0.2, 4.0), no noise (``noise_sigmas`` is ``None``).
    Setting 2: anisotropic, λ1, λ2 ~ U(0.2, 4.0), θ ~ U(0, π), noise σ ~ U(0, 25).

    Numbers are drawn with ``generator`` on its own device (so a CPU generator gives
    the same degradations whatever ``device`` is), then moved to ``device``.
    """
    spec = _check_setting(setting)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}")
    _check_size(size)
    if device is None and generator is not None:
        device = generator.device
    low, high = spec.width_range
    if spec.anisotropic:
        l1 = _uniform(batch, low, high, generator, device)
        l2 = _uniform(batch, low, high, generator, device)
        theta = _uniform(batch, 0.0, math.pi, generator, device)
        kernels = anisotropic_kernels(l1, l2, theta, size)
        params = torch.stack([l1, l2, theta], dim=1)
    else:
        sigma = _uniform(batch, low, high, generator, device)
        kernels = isotropic_kernels(sigma, size)
        params = sigma[:, None]
    noise = None
    if spec.noise_range is not None:
        noise = _uniform(batch, *spec.noise_range, generator, device)
    return RandomKernels(kernels, noise, params)


# --------------------------------------------------------------------------- blur


def blur(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Blur NCHW images with reflection padding of ``size//2`` (output has the input's size).

    Args:
        img: ``(B, C, H, W)`` float tensor; H and W must exceed ``size//2`` (reflection).
        kernel: ``(k, k)`` shared by the batch, or ``(B, k, k)`` one per sample; the same
            kernel is applied to every channel. ``k`` must be odd.

    This is a correlation (``F.conv2d``), as in the reference code; it equals a
    convolution for the point-symmetric Gaussian kernels of this module.
    """
    _check_image(img)
    if kernel.dim() not in (2, 3) or kernel.shape[-1] != kernel.shape[-2]:
        raise ConfigError(f"kernel must be (k, k) or (B, k, k), got {tuple(kernel.shape)}")
    k = _check_size(int(kernel.shape[-1]))
    b, c, h, w = img.shape
    pad = k // 2
    if pad >= h or pad >= w:
        raise ConfigError(f"image {h}×{w} is too small for reflection padding of {pad} (kernel {k}×{k})")
    kernel = kernel.to(device=img.device, dtype=img.dtype)
    padded = F.pad(img, (pad, pad, pad, pad), mode="reflect")
    if kernel.dim() == 2:
        out = F.conv2d(padded.reshape(b * c, 1, h + 2 * pad, w + 2 * pad), kernel.view(1, 1, k, k))
        return out.view(b, c, h, w)
    if kernel.shape[0] != b:
        raise ConfigError(f"got {kernel.shape[0]} kernels for a batch of {b} images")
    # Per-sample kernels: fold the batch into channels and use one group per (sample, channel).
    weight = kernel.repeat_interleave(c, dim=0).view(b * c, 1, k, k)
    out = F.conv2d(padded.reshape(1, b * c, h + 2 * pad, w + 2 * pad), weight, groups=b * c)
    return out.view(b, c, h, w)


# --------------------------------------------------------------------------- MATLAB imresize


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = −0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def _output_length(in_length: int, scale: float) -> int:
    """``ceil(in_length·scale)``, ignoring floating-point noise (``99·(1/3)`` gives 33, not 34)."""
    exact = in_length * scale
    nearest = round(exact)
    return int(nearest) if abs(exact - nearest) < 1e-9 * max(1.0, exact) else math.ceil(exact)


@functools.lru_cache(maxsize=64)
def _resize_matrix(in_length: int, out_length: int, scale: float, padding: str) -> torch.Tensor:
    """The ``(out_length, in_length)`` matrix of MATLAB's ``contributions`` along one axis.

    Output pixel ``x`` (1-based) maps to ``u = x/scale + ½(1 − 1/scale)`` in input
    coordinates; its taps are ``left … left+P−1`` with ``left = floor(u − width/2)``.
    When downscaling with antialiasing the kernel is stretched: ``h(t) = s·cubic(s·t)``,
    ``width = 4/s``. Weights are normalised to sum 1 per output pixel. Taps outside
    ``[1, in_length]`` are clamped to the border pixel (``"replicate"``, the reference
    code) or mirrored (``"symmetric"``: ``aux = [1..n, n..1]``, MATLAB), their weights
    accumulating onto that pixel. Float64 on the CPU, cached (training resizes the
    same patch sizes over and over); callers must not modify it. Built outside inference
    mode, so that a matrix first made under ``torch.inference_mode`` still serves autograd.
    """
    with torch.inference_mode(False):
        return _build_resize_matrix(in_length, out_length, scale, padding)


def _build_resize_matrix(in_length: int, out_length: int, scale: float, padding: str) -> torch.Tensor:
    antialias = scale < 1
    width = 4.0 / scale if antialias else 4.0
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = torch.floor(u - width / 2.0)
    taps = math.ceil(width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - indices
    weights = scale * cubic(dist * scale) if antialias else cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    idx = indices.long() - 1  # 0-based
    if padding == "symmetric":  # index i -> aux[i mod 2n] with aux = [0..n-1, n-1..0]
        idx = torch.remainder(idx, 2 * in_length)
        idx = torch.where(idx < in_length, idx, 2 * in_length - 1 - idx)
    else:
        idx = idx.clamp(0, in_length - 1)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.scatter_add_(1, idx, weights)
    return matrix


def imresize(img: torch.Tensor, scale: float, padding: str = "replicate") -> torch.Tensor:
    """MATLAB-style bicubic ``imresize(img, scale)`` on NCHW float tensors.

    Bicubic with a = −0.5, antialiased when ``scale < 1`` (MATLAB's default), height
    resized before width (MATLAB's order for equal scales), output
    ``ceil(H·scale) × ceil(W·scale)``. Values are not rounded or clamped (bicubic
    overshoots); the range of ``img`` does not matter.

    Border handling, the one place where the authors' code departs from MATLAB:

    * ``"replicate"`` (default): taps beyond the border read the border pixel. This is
      what the reference code (DASR's torch ``bicubic``, reused by KDSR and LightBSR)
      does, and what reproduces the reference vectors; it defines the papers' LR images.
    * ``"symmetric"``: MATLAB's own mirrored padding. It differs from ``"replicate"`` only
      where the kernel support (``4/scale`` input pixels when downscaling) crosses the
      border: the outer two LR pixels at ×1/4, by up to a few gray levels.

    Each axis is a matrix product with a precomputed ``(out, in)`` weight matrix, so it
    runs on any device and in the dtype of ``img``.
    """
    _check_image(img)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"scale must be a finite number > 0, got {scale!r}")
    if padding not in ("replicate", "symmetric"):
        raise ConfigError(f"padding must be 'replicate' or 'symmetric', got {padding!r}")
    scale = float(scale)
    h, w = img.shape[-2:]
    out_h, out_w = _output_length(h, scale), _output_length(w, scale)
    if h == 0 or w == 0 or out_h == 0 or out_w == 0:
        raise ConfigError(f"cannot resize a {h}×{w} image by {scale}")
    if scale == 1.0:
        return img.clone()
    rows = _resize_matrix(h, out_h, scale, padding).to(device=img.device, dtype=img.dtype)
    cols = _resize_matrix(w, out_w, scale, padding).to(device=img.device, dtype=img.dtype)
    out = torch.matmul(rows, img)  # (out_h, h) @ (..., h, w) -> (..., out_h, w)
    return torch.matmul(out, cols.T)  # (..., out_h, w) @ (w, out_w) -> (..., out_h, out_w)


# --------------------------------------------------------------------------- noise, quantisation


def add_noise(img: torch.Tensor, sigma: float | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add white Gaussian noise of std-dev ``sigma`` (0–255 units) to NCHW images.

    ``sigma`` is a number shared by the batch or a ``(B,)`` tensor, one per sample;
    ``sigma = 0`` adds nothing. The noise is drawn on the generator's device (the
    image's device without one) and returns a new tensor.
    """
    _check_image(img)
    sig = torch.as_tensor(sigma, dtype=img.dtype)
    if not bool(torch.isfinite(sig).all()) or bool((sig < 0).any()):
        raise ConfigError(f"noise sigma must be finite and >= 0, got {_show(sig)}")
    if sig.dim() > 1 or (sig.dim() == 1 and sig.numel() not in (1, img.shape[0])):
        raise ConfigError(f"noise sigma must be a number or a ({img.shape[0]},) tensor, got {tuple(sig.shape)}")
    sig = sig.to(img.device).reshape(-1, 1, 1, 1)
    draw_device = generator.device if generator is not None else img.device
    noise = torch.randn(img.shape, generator=generator, device=draw_device, dtype=img.dtype).to(img.device)
    return img + noise * sig


def round_clamp(img: torch.Tensor) -> torch.Tensor:
    """Quantise to 8-bit levels: round (half to even, as ``torch.round``) and clamp to [0, 255]."""
    return img.round().clamp(0.0, 255.0)


def degrade(
    hr: torch.Tensor,
    kernel: torch.Tensor,
    scale: int = 4,
    noise_sigma: float | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The classical degradation ``LR = round_clamp(imresize(blur(HR, k), 1/scale) + n)``.

    Args:
        hr: ``(B, 3, H, W)`` float images in the **0–255** range; H and W should be
            multiples of ``scale`` (see :func:`crop_to_multiple`) so that LR is exactly
            ``H/scale × W/scale``.
        kernel: ``(k, k)`` shared or ``(B, k, k)`` per-sample blur kernels.
        scale: integer downscaling factor.
        noise_sigma: noise std-dev in 0–255 units (number or ``(B,)``), ``None`` or 0 for none.
        generator: random generator for the noise.

    Returns:
        LR float images in **0–255**, holding integer values (divide by 255 for a model).
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")
    lr = imresize(blur(hr, kernel), 1.0 / scale)
    if noise_sigma is not None:
        lr = add_noise(lr, noise_sigma, generator)
    return round_clamp(lr)


def crop_to_multiple(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom/right of NCHW images so that H and W are multiples of ``scale``."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def benchmark_pair(
    hr: torch.Tensor,
    kernel: torch.Tensor,
    scale: int = 4,
    noise_sigma: float | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The papers' benchmark protocol: ``(hr_cropped, lr)``, both 0–255.

    HR is cropped to a multiple of ``scale`` and degraded with :func:`degrade`; for
    setting 1 use ``isotropic_kernel(σ)`` and no noise (σ ∈ {1.2, 2.4, 3.6} in the papers).
    """
    hr = crop_to_multiple(hr, scale)
    return hr, degrade(hr, kernel, scale, noise_sigma, generator)


# --------------------------------------------------------------------------- PCA basis for the DRP


TEACHER_PCA_SAMPLES = 5000
TEACHER_PCA_WIDTHS = (0.2, 10.0)
"""λ1, λ2 ~ U(0.2, 10) of the broad kernel family the teacher's PCA basis is fitted to (θ ~ U(0, π))."""


def kernel_pca(
    dim: int = 15, size: int = KERNEL_SIZE, samples: int = TEACHER_PCA_SAMPLES, seed: int = 0
) -> torch.Tensor:
    """The teacher's PCA basis ``(dim, size*size)``, made the authors' way, deterministic for a ``seed``.

    As the authors' LightBSR code: ``samples`` broad anisotropic kernels (λ1, λ2 ~ U(0.2, 10),
    θ ~ U(0, π); drawn from a CPU generator seeded with ``seed``), flattened into the columns of
    ``K`` (``size²`` × ``samples``), and the top-``dim`` eigenvectors of the **uncentred**
    ``K·Kᵀ`` (no mean kernel subtracted), computed in float64 with ``torch.linalg.eigh``. One
    basis serves both degradation settings. The DRP projects the kernel on it:
    ``drp = kernel.flatten(-2) @ basis.T``; the authors' run saves the same matrix transposed
    (``PCA_matrix.mat``, key ``p``, ``size²`` × ``dim``). Each component's sign is fixed so that
    its entry of largest magnitude is positive. Returns float32 on the CPU.

    A teacher keeps the basis it was trained with in its checkpoint (``pca_basis``), so teachers
    trained on another basis stay self-consistent.
    """
    _check_size(size)
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= size * size:
        raise ConfigError(f"PCA dim must be in [1, {size * size}], got {dim!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < dim:
        raise ConfigError(f"PCA samples must be an integer >= dim ({dim}), got {samples!r}")
    generator = torch.Generator().manual_seed(seed)
    low, high = TEACHER_PCA_WIDTHS
    l1 = _uniform(samples, low, high, generator, "cpu")
    l2 = _uniform(samples, low, high, generator, "cpu")
    theta = _uniform(samples, 0.0, math.pi, generator, "cpu")
    k = anisotropic_kernels(l1, l2, theta, size).reshape(samples, -1).double().T  # (size², samples)
    _, vectors = torch.linalg.eigh(k @ k.T)  # ascending eigenvalues
    basis = vectors[:, -dim:].flip(1).T.contiguous()  # (dim, size*size), largest first
    peak = basis.gather(1, basis.abs().argmax(dim=1, keepdim=True))
    return (basis * torch.sign(peak)).float()
