"""Y-PSNR / SSIM of the papers' protocol, checked by hand, against an independent oracle, and by property."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightbsr import metrics as M
from lightbsr.errors import ConfigError

Y_SUM = (65.738 + 129.057 + 25.064) / 256.0  # Y of white (no +16 offset)

FAST = settings(max_examples=20, deadline=None)


def gray(value: float, h: int = 32, w: int = 32, n: int = 1) -> torch.Tensor:
    return torch.full((n, 3, h, w), value, dtype=torch.float64)


def noisy(img: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (img + sigma * torch.randn(img.shape, generator=gen, dtype=img.dtype)).clamp(0, 1)


def textured(h: int = 48, w: int = 40, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 3, h // 4, w // 4, generator=gen, dtype=torch.float64)
    return torch.nn.functional.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)


def basicsr_ssim_y(sr: torch.Tensor, hr: torch.Tensor, shave: int) -> float:
    """BasicSR's ``calculate_ssim(..., test_y_channel=True)``, rewritten with OpenCV and numpy."""

    def to_y(img: torch.Tensor) -> np.ndarray:
        rgb = img[0].permute(1, 2, 0).numpy().astype(np.float64)
        return (rgb @ np.array([65.481, 128.553, 24.966]) + 16.0)[shave : -shave or None, shave : -shave or None]

    a, b = to_y(sr), to_y(hr)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(g, g.T)

    def filt(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]

    mu1, mu2 = filt(a), filt(b)
    s11, s22, s12 = filt(a * a) - mu1**2, filt(b * b) - mu2**2, filt(a * b) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return float(ssim_map.mean())


# --------------------------------------------------------------------------- Y channel, PSNR


def test_rgb_to_y() -> None:
    assert float(M.rgb_to_y(gray(1.0))[0, 0, 0, 0]) == pytest.approx(Y_SUM, abs=1e-12)
    assert float(M.rgb_to_y(gray(0.0)).abs().max()) == 0.0
    red = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    red[:, 0] = 1.0
    assert float(M.rgb_to_y(red)[0, 0, 0, 0]) == pytest.approx(65.738 / 256, abs=1e-12)


def test_psnr_y_by_hand() -> None:
    # SR = HR + 0.1 on all channels in the kept area: Y difference 0.1·Y_SUM everywhere.
    hr = gray(0.2, 40, 40)
    sr = hr + 0.1
    sr[..., :4, :] = 1.0  # garbage in the shaved border must not count
    sr[..., :, -4:] = 0.0
    expected = -20.0 * math.log10(0.1 * Y_SUM)
    assert M.psnr_y(sr, hr, shave=4) == pytest.approx(expected, abs=1e-9)
    assert M.psnr_y(sr, hr, shave=0) < expected - 1.0


def test_psnr_y_is_mean_of_per_image_values() -> None:
    hr = gray(0.5, 24, 24, n=2)
    sr = hr.clone()
    sr[0] += 0.01
    sr[1] += 0.1
    per = M.psnr_y_per_image(sr, hr, shave=2)
    assert per.shape == (2,)
    assert per.tolist() == pytest.approx([-20 * math.log10(d * Y_SUM) for d in (0.01, 0.1)], abs=1e-9)
    assert M.psnr_y(sr, hr, shave=2) == pytest.approx(float(per.mean()), abs=1e-12)
    pooled = -10 * math.log10(float((M.rgb_to_y(sr) - M.rgb_to_y(hr))[..., 2:-2, 2:-2].pow(2).mean()))
    assert abs(M.psnr_y(sr, hr, shave=2) - pooled) > 1.0  # not the PSNR of the pooled MSE


def test_psnr_of_identical_images_is_inf() -> None:
    img = textured()
    assert M.psnr_y(img, img, shave=4) == math.inf
    assert M.psnr(img, img) == math.inf
    assert M.psnr_y_per_image(img, img.clone()).tolist() == [math.inf]


def test_psnr_all_channels_by_hand() -> None:
    a = torch.full((1, 3, 8, 8), 100.0)
    b = a + 5.0
    assert M.psnr(a, b, data_range=255.0) == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)
    b[:, 2] = a[:, 2]  # only 2 of 3 channels differ: MSE = 25·2/3
    assert M.psnr(a, b, data_range=255.0) == pytest.approx(10 * math.log10(255**2 / (25 * 2 / 3)), abs=1e-9)


@FAST
@given(sigma_a=st.floats(0.01, 0.2), sigma_b=st.floats(0.01, 0.2), seed=st.integers(0, 10))
def test_psnr_y_symmetric_and_decreasing_with_noise(sigma_a: float, sigma_b: float, seed: int) -> None:
    hr = textured(seed=seed)
    sr = noisy(hr, sigma_a, seed)
    assert M.psnr_y(sr, hr, 4) == pytest.approx(M.psnr_y(hr, sr, 4), abs=1e-9)
    low, high = sorted((sigma_a, sigma_b))
    if high > 1.5 * low:
        # Same noise pattern, scaled: more noise never gives a higher PSNR.
        assert M.psnr_y(noisy(hr, high, seed), hr, 4) < M.psnr_y(noisy(hr, low, seed), hr, 4)


# --------------------------------------------------------------------------- SSIM


def test_ssim_of_identical_images_is_one() -> None:
    img = textured()
    assert M.ssim_y(img, img, shave=4) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_constant_images_closed_form() -> None:
    # Flat images: σ = 0, so SSIM reduces to the luminance term on Y (with the +16 offset).
    a, b = 0.3, 0.6
    mx, my = 16 + 255 * a * Y_SUM, 16 + 255 * b * Y_SUM
    c1 = (0.01 * 255) ** 2
    expected = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
    assert M.ssim_y(gray(a), gray(b), shave=4) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize(("sigma", "shave"), [(0.02, 4), (0.1, 4), (0.3, 0), (0.05, 2)])
def test_ssim_matches_basicsr_algorithm(sigma: float, shave: int) -> None:
    hr = textured(56, 44, seed=1)
    sr = noisy(hr, sigma, seed=2)
    # BasicSR's Y weights are 65.481/128.553/24.966 (ours ×255/256, equal to 5 digits).
    assert M.ssim_y(sr, hr, shave) == pytest.approx(basicsr_ssim_y(sr, hr, shave), abs=2e-5)


@FAST
@given(sigma=st.floats(0.01, 0.3), seed=st.integers(0, 10))
def test_ssim_symmetric_bounded_and_decreasing(sigma: float, seed: int) -> None:
    hr = textured(seed=seed)
    sr = noisy(hr, sigma, seed)
    value = M.ssim_y(sr, hr, 4)
    assert -1.0 <= value < 1.0
    assert value == pytest.approx(M.ssim_y(hr, sr, 4), abs=1e-12)
    assert M.ssim_y(noisy(hr, 2 * sigma, seed), hr, 4) < value


def test_ssim_per_image_and_float32_input() -> None:
    hr = torch.cat([textured(seed=0), textured(seed=1)])
    sr = noisy(hr, 0.05)
    per = M.ssim_y_per_image(sr.float(), hr.float(), 4)
    assert per.dtype == torch.float64 and per.shape == (2,)
    assert per[1] == pytest.approx(M.ssim_y(sr[1:], hr[1:], 4), abs=1e-6)
    assert M.ssim_y(sr, hr, 4) == pytest.approx(float(per.mean()), abs=1e-6)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call",
    [
        lambda: M.psnr_y(gray(0.5, 16, 16), gray(0.5, 16, 18)),
        lambda: M.psnr_y(gray(0.5, 16, 16), gray(0.5, 16, 16), shave=8),
        lambda: M.psnr_y(gray(0.5, 16, 16), gray(0.5, 16, 16), shave=-1),
        lambda: M.psnr_y(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)),
        lambda: M.ssim_y(gray(0.5, 16, 16), gray(0.5, 16, 16), shave=4),
        lambda: M.psnr(torch.zeros(2), torch.zeros(3)),
        lambda: M.psnr(torch.zeros(2), torch.zeros(2), data_range=0.0),
    ],
)
def test_bad_arguments_raise_config_error(call: object) -> None:
    with pytest.raises(ConfigError):
        call()  # type: ignore[operator]
