"""The degradation pipeline against the authors' reference vectors, plus its properties."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from lightbsr import degradation as D
from lightbsr.errors import ConfigError

REFERENCE = Path(__file__).parent / "data" / "reference" / "degradation.safetensors"

# Tag of the reference vectors -> our kernel.
KERNELS = {
    "iso_sigma1.2": lambda: D.isotropic_kernel(1.2),
    "iso_sigma3.6": lambda: D.isotropic_kernel(3.6),
    "aniso_l0.8_l3.2_t30": lambda: D.anisotropic_kernel(0.8, 3.2, math.radians(30)),
}

FAST = settings(max_examples=25, deadline=None)


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(str(REFERENCE))


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


# --------------------------------------------------------------------------- reference vectors


@pytest.mark.parametrize("tag", list(KERNELS))
def test_kernel_matches_reference(ref: dict[str, torch.Tensor], tag: str) -> None:
    kernel = KERNELS[tag]()
    assert kernel.shape == (21, 21) and kernel.dtype == torch.float32
    assert max_abs(kernel, ref[f"kernel.{tag}"]) < 1e-6


def test_anisotropic_rotation_sign(ref: dict[str, torch.Tensor]) -> None:
    # The opposite rotation is the transposed kernel: clearly different from the reference.
    mirrored = D.anisotropic_kernel(0.8, 3.2, math.radians(-30))
    assert max_abs(mirrored, ref["kernel.aniso_l0.8_l3.2_t30"]) > 1e-2


@pytest.mark.parametrize("tag", list(KERNELS))
def test_blur_matches_reference(ref: dict[str, torch.Tensor], tag: str) -> None:
    assert max_abs(D.blur(ref["hr"], KERNELS[tag]()), ref[f"blurred.{tag}"]) < 1e-3


@pytest.mark.parametrize("tag", list(KERNELS))
def test_lr_float_matches_reference(ref: dict[str, torch.Tensor], tag: str) -> None:
    assert max_abs(D.imresize(ref[f"blurred.{tag}"], 1 / 4), ref[f"lr_float.{tag}"]) < 1e-3
    lr = D.imresize(D.blur(ref["hr"], KERNELS[tag]()), 1 / 4)
    assert max_abs(lr, ref[f"lr_float.{tag}"]) < 1e-3


@pytest.mark.parametrize("tag", list(KERNELS))
def test_degrade_matches_reference_exactly(ref: dict[str, torch.Tensor], tag: str) -> None:
    lr = D.degrade(ref["hr"], KERNELS[tag](), scale=4)
    assert torch.equal(lr, ref[f"lr_uint8.{tag}"])


def test_bicubic_only_matches_reference(ref: dict[str, torch.Tensor]) -> None:
    assert max_abs(D.imresize(ref["hr"], 0.25), ref["bicubic_only_lr_float"]) < 1e-3


def test_reference_uses_replicate_not_symmetric_padding(ref: dict[str, torch.Tensor]) -> None:
    # MATLAB's mirrored padding agrees in the interior, not on the outer two LR pixels
    # (whose 16-pixel antialiasing support crosses the HR border).
    sym = D.imresize(ref["hr"], 0.25, padding="symmetric")
    target = ref["bicubic_only_lr_float"]
    assert max_abs(sym[..., 2:-2, 2:-2], target[..., 2:-2, 2:-2]) < 1e-3
    assert max_abs(sym, target) > 0.1


# --------------------------------------------------------------------------- kernels


@FAST
@given(sigma=st.floats(0.2, 4.0), size=st.sampled_from([7, 15, 21]))
def test_isotropic_kernel_properties(sigma: float, size: int) -> None:
    k = D.isotropic_kernel(sigma, size)
    assert k.shape == (size, size)
    assert abs(float(k.sum()) - 1.0) < 1e-5
    assert torch.allclose(k, k.T) and torch.allclose(k, k.flip(0))
    assert int(k.argmax()) == (size * size) // 2


@FAST
@given(sigma=st.floats(0.2, 4.0), theta=st.floats(0.0, math.pi))
def test_anisotropic_with_equal_lambdas_is_isotropic(sigma: float, theta: float) -> None:
    assert torch.allclose(D.anisotropic_kernel(sigma, sigma, theta), D.isotropic_kernel(sigma), atol=1e-6)


@FAST
@given(l1=st.floats(0.2, 4.0), l2=st.floats(0.2, 4.0), theta=st.floats(0.0, math.pi))
def test_anisotropic_kernel_symmetries(l1: float, l2: float, theta: float) -> None:
    k = D.anisotropic_kernel(l1, l2, theta)
    assert abs(float(k.sum()) - 1.0) < 1e-5
    assert torch.allclose(k, k.flip(0, 1), atol=1e-7)  # point-symmetric: correlation = convolution
    assert torch.allclose(D.anisotropic_kernel(l1, l2, theta + math.pi), k, atol=1e-6)
    assert torch.allclose(D.anisotropic_kernel(l2, l1, theta + math.pi / 2), k, atol=1e-6)


def test_anisotropic_axes_orientation() -> None:
    # θ = 0: λ1 along x (columns); θ = 90°: λ1 along y (rows).
    wide = D.anisotropic_kernel(3.0, 0.5, 0.0)
    assert float(wide[10, 14]) > 100 * float(wide[14, 10])
    assert torch.allclose(D.anisotropic_kernel(3.0, 0.5, math.pi / 2), wide.T, atol=1e-7)


def test_batched_kernels_equal_single() -> None:
    sigmas = torch.tensor([0.3, 1.7, 3.9])
    batch = D.isotropic_kernels(sigmas)
    for i, s in enumerate(sigmas.tolist()):
        assert torch.allclose(batch[i], D.isotropic_kernel(s), atol=1e-7)
    l1, l2, th = torch.tensor([0.5, 2.0]), torch.tensor([3.0, 1.0]), torch.tensor([0.3, 2.5])
    batch = D.anisotropic_kernels(l1, l2, th)
    for i in range(2):
        single = D.anisotropic_kernel(float(l1[i]), float(l2[i]), float(th[i]))
        assert torch.allclose(batch[i], single, atol=1e-7)


@pytest.mark.parametrize("setting", [1, 2])
def test_random_kernels(setting: int) -> None:
    out = D.random_kernels(64, setting, generator=torch.Generator().manual_seed(3))
    again = D.random_kernels(64, setting, generator=torch.Generator().manual_seed(3))
    assert out.kernels.shape == (64, 21, 21)
    assert torch.equal(out.kernels, again.kernels)
    assert torch.allclose(out.kernels.sum(dim=(1, 2)), torch.ones(64), atol=1e-5)
    widths = out.params[:, :1] if setting == 1 else out.params[:, :2]
    assert float(widths.min()) >= 0.2 and float(widths.max()) <= 4.0
    if setting == 1:
        assert out.noise_sigmas is None and out.params.shape == (64, 1)
        assert torch.allclose(out.kernels, D.isotropic_kernels(out.params[:, 0]))
    else:
        assert out.noise_sigmas is not None and out.params.shape == (64, 3)
        assert float(out.noise_sigmas.min()) >= 0.0 and float(out.noise_sigmas.max()) <= 25.0
        assert float(out.params[:, 2].min()) >= 0.0 and float(out.params[:, 2].max()) <= math.pi
        assert torch.allclose(out.kernels, D.anisotropic_kernels(out.params[:, 0], out.params[:, 1], out.params[:, 2]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_random_kernels_on_gpu() -> None:
    out = D.random_kernels(8, 2, generator=torch.Generator().manual_seed(0), device="cuda")
    cpu = D.random_kernels(8, 2, generator=torch.Generator().manual_seed(0))
    assert out.kernels.device.type == "cuda"
    assert torch.allclose(out.kernels.cpu(), cpu.kernels, atol=1e-6)
    img = torch.rand(8, 3, 32, 32, device="cuda") * 255
    lr = D.degrade(img, out.kernels, 4, out.noise_sigmas, torch.Generator("cuda").manual_seed(0))
    assert lr.shape == (8, 3, 8, 8) and lr.device.type == "cuda"


@pytest.mark.parametrize(
    "call",
    [
        lambda: D.isotropic_kernel(0.0),
        lambda: D.isotropic_kernel(-1.0),
        lambda: D.isotropic_kernel(float("nan")),
        lambda: D.isotropic_kernel(1.0, size=20),
        lambda: D.isotropic_kernels(torch.tensor([1.0, 0.0])),
        lambda: D.anisotropic_kernel(1.0, 0.0, 0.0),
        lambda: D.anisotropic_kernels(torch.ones(2), torch.ones(3), torch.zeros(2)),
        lambda: D.random_kernels(4, 3),
        lambda: D.random_kernels(0, 1),
        lambda: D.kernel_pca(0),
        lambda: D.isotropic_kernel(1e-30),
        lambda: D.imresize(torch.zeros(1, 3, 8, 8), 0.0),
        lambda: D.imresize(torch.zeros(1, 3, 8, 8), 2.0, padding="zeros"),
        lambda: D.imresize(torch.zeros(3, 8, 8), 2.0),
        lambda: D.blur(torch.zeros(2, 3, 32, 32), torch.ones(3, 21, 21)),
        lambda: D.blur(torch.zeros(1, 3, 32, 32), torch.ones(20, 20)),
        lambda: D.blur(torch.zeros(1, 3, 8, 8), D.isotropic_kernel(1.0)),
        lambda: D.add_noise(torch.zeros(1, 3, 8, 8), -1.0),
        lambda: D.degrade(torch.zeros(1, 3, 32, 32), D.isotropic_kernel(1.0), scale=0),
    ],
)
def test_bad_arguments_raise_config_error(call: object) -> None:
    with pytest.raises(ConfigError):
        call()  # type: ignore[operator]


# --------------------------------------------------------------------------- blur


def test_per_sample_blur_equals_per_image_blur() -> None:
    gen = torch.Generator().manual_seed(0)
    imgs = torch.rand(3, 3, 40, 36, generator=gen) * 255
    kernels = D.random_kernels(3, 2, generator=gen).kernels
    batched = D.blur(imgs, kernels)
    for i in range(3):
        assert torch.allclose(batched[i : i + 1], D.blur(imgs[i : i + 1], kernels[i]), atol=1e-4)
    shared = D.blur(imgs, kernels[0])
    assert torch.allclose(shared, D.blur(imgs, kernels[0].expand(3, 21, 21)), atol=1e-4)


@FAST
@given(value=st.floats(0.0, 255.0), sigma=st.floats(0.2, 4.0))
def test_blur_keeps_constant_images(value: float, sigma: float) -> None:
    img = torch.full((1, 3, 24, 30), value)
    assert torch.allclose(D.blur(img, D.isotropic_kernel(sigma)), img, atol=1e-3)


def test_blur_is_channel_independent_and_uses_reflection() -> None:
    img = torch.zeros(1, 3, 30, 30)
    img[0, 1, 1, 1] = 255.0  # an impulse next to the corner, in the green channel only
    kernel = D.isotropic_kernel(2.0)
    out = D.blur(img, kernel)
    assert float(out[0, 0].abs().max()) == 0.0 and float(out[0, 2].abs().max()) == 0.0
    # Reflection about the edge pixel ("reflect", not "symmetric"/"replicate"/zeros) mirrors the
    # impulse to -1 (row and column): pixel (0, 0) sees four copies of it at distance √2.
    zero_padded = torch.nn.functional.conv2d(img[:, 1:2], kernel[None, None], padding=10)[0, 0]
    assert float(out[0, 1, 0, 0]) == pytest.approx(4 * float(zero_padded[0, 0]), rel=1e-5)
    assert float(out[0, 1].sum()) > float(zero_padded.sum()) + 1.0


# --------------------------------------------------------------------------- imresize


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        ((17, 23), 2, (34, 46)),
        ((17, 23), 3, (51, 69)),
        ((17, 23), 4, (68, 92)),
        ((96, 128), 1 / 4, (24, 32)),
        ((97, 130), 1 / 4, (25, 33)),
        ((99, 100), 1 / 3, (33, 34)),
        ((35, 36), 1 / 2, (18, 18)),
    ],
)
def test_imresize_output_size_is_ceil(size: tuple[int, int], scale: float, expected: tuple[int, int]) -> None:
    assert D.imresize(torch.rand(2, 3, *size), scale).shape == (2, 3, *expected)


@FAST
@given(
    value=st.floats(0.0, 255.0),
    h=st.integers(4, 40),
    w=st.integers(4, 40),
    scale=st.sampled_from([2.0, 3.0, 4.0, 1 / 2, 1 / 3, 1 / 4]),
    padding=st.sampled_from(["replicate", "symmetric"]),
)
def test_imresize_keeps_constant_images(value: float, h: int, w: int, scale: float, padding: str) -> None:
    img = torch.full((1, 3, h, w), value, dtype=torch.float64)
    out = D.imresize(img, scale, padding=padding)
    assert torch.allclose(out, torch.full_like(out, value), atol=1e-9)


@pytest.mark.parametrize("scale", [2.0, 3.0, 4.0, 1 / 2, 1 / 4])
def test_imresize_reproduces_linear_ramps_with_matlab_coordinates(scale: float) -> None:
    # Keys' cubic reproduces linear functions; output pixel x (1-based) samples input
    # coordinate u = x/scale + (1 - 1/scale)/2. Checked away from the borders.
    n = 64
    ramp = torch.arange(1, n + 1, dtype=torch.float64)
    img = (3.0 * ramp[:, None] - 2.0 * ramp[None, :]).expand(1, 1, n, n)
    out = D.imresize(img, scale)
    m = out.shape[-1]
    u = torch.arange(1, m + 1, dtype=torch.float64) / scale + 0.5 * (1 - 1 / scale)
    expected = 3.0 * u[:, None] - 2.0 * u[None, :]
    margin = math.ceil(3 * max(scale, 1 / scale))
    inner = (slice(margin, m - margin), slice(margin, m - margin))
    assert torch.allclose(out[0, 0][inner], expected[inner], atol=1e-9)


def test_imresize_upscale_matches_separable_bicubic_by_hand() -> None:
    # One interior output sample of ×2, from Keys' weights at distances 1.25, 0.25, 0.75, 1.75.
    x = torch.tensor([5.0, 1.0, 7.0, 2.0, 9.0, 4.0, 8.0, 3.0], dtype=torch.float64)
    out = D.imresize(x.view(1, 1, 1, 8).expand(1, 1, 8, 8).contiguous(), 2.0)[0, 0, 0]
    # Output x = 8 (1-based): u = 8/2 + 0.5·(1 − 1/2) = 4.25 -> taps 3, 4, 5, 6.
    # Keys (a = −0.5), written out: |d| ≤ 1: 1.5|d|³ − 2.5|d|² + 1; 1 < |d| ≤ 2: −0.5|d|³ + 2.5|d|² − 4|d| + 2
    w = [-0.0703125, 0.8671875, 0.2265625, -0.0234375]
    assert sum(w) == 1.0
    assert float(out[7]) == pytest.approx(w[0] * 7 + w[1] * 2 + w[2] * 9 + w[3] * 4, abs=1e-9)  # x[2:6] = 7, 2, 9, 4
    np.testing.assert_allclose(D.cubic(torch.tensor([1.25, 0.25, 0.75, 1.75], dtype=torch.float64)).numpy(), w)


def test_imresize_dtype_and_batch() -> None:
    img = torch.rand(3, 2, 20, 24, dtype=torch.float64)
    out = D.imresize(img, 0.5)
    assert out.dtype == torch.float64
    for i in range(3):
        assert torch.allclose(out[i : i + 1], D.imresize(img[i : i + 1], 0.5))


def test_imresize_gradients_after_inference_mode() -> None:
    # Weight matrices are cached; one first built under inference mode must still serve autograd.
    with torch.inference_mode():
        D.imresize(torch.rand(1, 1, 37, 41), 0.5)
    img = torch.rand(1, 1, 37, 41, requires_grad=True)
    D.imresize(img, 0.5).sum().backward()
    assert img.grad is not None and float(img.grad.abs().sum()) > 0


# --------------------------------------------------------------------------- noise, rounding, degrade


def test_round_clamp() -> None:
    x = torch.tensor([-3.2, 0.4, 0.6, 1.5, 2.5, 254.6, 300.0]).view(1, 1, 1, -1)
    expected = torch.tensor([0.0, 0.0, 1.0, 2.0, 2.0, 255.0, 255.0])  # torch.round: half to even
    assert torch.equal(D.round_clamp(x).flatten(), expected)


def test_add_noise() -> None:
    img = torch.full((2, 3, 64, 64), 128.0)
    assert torch.equal(D.add_noise(img, 0.0), img)
    noisy = D.add_noise(img, torch.tensor([0.0, 10.0]), generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy[0], img[0])
    assert 9.0 < float((noisy[1] - img[1]).std()) < 11.0
    again = D.add_noise(img, torch.tensor([0.0, 10.0]), generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy, again)


def test_degrade_with_noise_is_8bit() -> None:
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 48, 64, generator=gen) * 255
    deg = D.random_kernels(2, 2, generator=gen)
    lr = D.degrade(hr, deg.kernels, 4, deg.noise_sigmas, gen)
    assert lr.shape == (2, 3, 12, 16)
    assert torch.equal(lr, lr.round()) and float(lr.min()) >= 0 and float(lr.max()) <= 255


def test_benchmark_pair_crops_to_multiple_of_scale() -> None:
    hr = torch.rand(1, 3, 50, 45) * 255
    cropped, lr = D.benchmark_pair(hr, D.isotropic_kernel(1.2), scale=4)
    assert cropped.shape == (1, 3, 48, 44) and lr.shape == (1, 3, 12, 11)
    assert torch.equal(cropped, hr[..., :48, :44])
    assert torch.equal(lr, D.degrade(hr[..., :48, :44], D.isotropic_kernel(1.2), 4))


# --------------------------------------------------------------------------- PCA


def test_kernel_pca_is_deterministic_and_orthonormal() -> None:
    basis = D.kernel_pca(samples=1000)
    assert basis.shape == (15, 441) and basis.dtype == torch.float32
    assert torch.equal(basis, D.kernel_pca(samples=1000))
    assert not torch.equal(basis, D.kernel_pca(samples=1000, seed=1))
    assert torch.allclose(basis @ basis.T, torch.eye(15), atol=1e-5)
    peaks = basis.gather(1, basis.abs().argmax(dim=1, keepdim=True))
    assert bool((peaks > 0).all())


def test_kernel_pca_is_the_authors_uncentred_basis_of_broad_anisotropic_kernels() -> None:
    # Rebuilt here from its definition (not from the function): 5000 kernels with λ1, λ2 ~ U(0.2, 10),
    # θ ~ U(0, π) drawn in that order from a generator seeded 0, eigenvectors of the uncentred K·Kᵀ.
    g = torch.Generator().manual_seed(0)
    l1, l2 = torch.rand(5000, generator=g) * 9.8 + 0.2, torch.rand(5000, generator=g) * 9.8 + 0.2
    theta = torch.rand(5000, generator=g) * math.pi
    k = D.anisotropic_kernels(l1, l2, theta).reshape(5000, -1).double().T
    values, vectors = torch.linalg.eigh(k @ k.T)
    basis = D.kernel_pca().double()
    for i in range(15):  # the same subspace direction, up to the sign convention
        assert abs(float(basis[i] @ vectors[:, -1 - i])) > 0.999, i
    # uncentred: the first component is the dominant (mean) direction, all of one sign
    assert float((basis[0] >= -1e-6).float().mean()) == 1.0
    assert values[-1] > 0


def test_kernel_pca_serves_both_settings_kernels() -> None:
    basis = D.kernel_pca().double()
    kernels = torch.cat(
        [
            D.isotropic_kernels(torch.tensor([1.2, 2.4, 3.6])),
            D.anisotropic_kernels(torch.tensor([0.8, 3.0]), torch.tensor([3.2, 1.5]), torch.tensor([0.5, 2.0])),
        ]
    ).reshape(5, -1)
    flat = kernels.double()
    recon = flat @ basis.T @ basis
    assert float(((recon - flat).norm(dim=1) / flat.norm(dim=1)).max()) < 0.2
    assert (kernels @ basis.float().T).shape == (5, 15)  # the DRP of the teacher
