"""Upscaler: tiled inference is exact for local models and close for the real ones; shared IDR; OOM; layouts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from runtime_models import reference_student

from lightbsr.benchmarks.consistency import psnr
from lightbsr.errors import ConfigError, ModelFileError, OutOfMemoryError
from lightbsr.models import build_model
from lightbsr.runtime import IDR, Backend, Upscaler, memory
from lightbsr.runtime.tiling import balanced_tile, plan_tiles
from lightbsr.runtime.upscaler import DEFAULT_OVERLAP

SCALE = 4


class PointwiseBackend(Backend):
    """A LightBSR-shaped model whose restorer is pointwise given the IDR (receptive field 1 LR pixel).

    The channel IDR is a global statistic (channel means), the spatial IDR per-pixel, as in
    LightBSR, so tiling with a shared estimate must reproduce the untiled output exactly.
    """

    name = "pointwise"

    def __init__(self, max_tile_pixels: int | None = None) -> None:
        self.family, self.scale, self.device, self.precision = "lightbsr", SCALE, "cpu", "fp32"
        self.max_tile_pixels = max_tile_pixels
        self.calls: dict[str, int] = {"estimate": 0, "restore": 0}
        self.free = None

    def estimate(self, lr: np.ndarray) -> IDR:
        self.calls["estimate"] += 1
        means = lr.mean(axis=(2, 3))
        channel = np.tile(means, (1, 16)).astype(np.float32)
        spatial = np.repeat(lr.sum(axis=1, keepdims=True) ** 2, 8, axis=1).astype(np.float32)
        return {"idr_channel": channel, "idr_spatial": spatial}

    def restore(self, lr: np.ndarray, idr: IDR) -> np.ndarray:
        self.calls["restore"] += 1
        if self.max_tile_pixels is not None and lr.shape[0] * lr.shape[2] * lr.shape[3] > self.max_tile_pixels:
            raise MemoryError("pretend allocation failure")
        out = np.sin(3 * lr) * (1 + idr["idr_spatial"][:, :3]) + idr["idr_channel"][:, :3, None, None]
        return out.repeat(SCALE, axis=2).repeat(SCALE, axis=3)

    def free_memory(self) -> int | None:
        return self.free


@pytest.fixture
def lr_image() -> np.ndarray:
    return np.random.default_rng(0).random((3, 37, 29)).astype(np.float32)


@pytest.fixture(scope="module")
def butterfly(data_dir: Any) -> np.ndarray:
    img = cv2.imread(str(data_dir / "images" / "butterfly_crop.png"))[:48, :48, ::-1]
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 255


# --------------------------------------------------------------------------- exactness and the shared estimate


@pytest.mark.parametrize(("tile", "overlap", "batch"), [(8, 0, 1), (8, 4, 1), (16, 6, 3), (10, 7, 2), (64, 16, 1)])
def test_tiling_a_local_model_with_a_shared_estimate_is_exact(
    lr_image: np.ndarray, tile: int, overlap: int, batch: int
) -> None:
    backend = PointwiseBackend()
    whole = Upscaler(backend, tile=0).upscale_lr(lr_image)
    tiled = Upscaler(backend, tile=tile, tile_overlap=overlap, tile_batch=batch).upscale_lr(lr_image)
    assert tiled.shape == (3, 37 * SCALE, 29 * SCALE)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)


def test_shared_estimate_runs_once_and_per_tile_estimates_differ(lr_image: np.ndarray) -> None:
    backend = PointwiseBackend()
    whole = Upscaler(backend, tile=0).upscale_lr(lr_image)
    backend.calls = {"estimate": 0, "restore": 0}
    shared = Upscaler(backend, tile=16, tile_overlap=4, tile_batch=4)
    shared.upscale_lr(lr_image)
    tiles = shared.last_run.tiles
    assert tiles == 9 and backend.calls == {"estimate": 1, "restore": math.ceil(tiles / 4)}
    backend.calls = {"estimate": 0, "restore": 0}
    per_tile = Upscaler(backend, tile=16, tile_overlap=4, shared_idr=False).upscale_lr(lr_image)
    assert backend.calls == {"estimate": tiles, "restore": tiles}
    # tiles estimating their own (global) channel IDR disagree with the whole image
    assert np.abs(per_tile - whole).max() > 1e-2


# --------------------------------------------------------------------------- real models


def _psnrs(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    return psnr(np.clip(reference, 0, 1), np.clip(other, 0, 1)), psnr(reference, other)


def test_lightbsr_reference_weights_tiled_close_to_untiled(butterfly: np.ndarray) -> None:
    # The reference (random) weights saturate and are sensitive to a tile's cut edge over
    # ~10 LR pixels, and LightBSR's restorer pools globally in every block, so tiles only
    # approximate the whole image; with a generous overlap the blend is still close
    # (clamped ~50 dB, raw ~35 dB measured), where pasting tiles gives ~17 / -4 dB.
    model = reference_student()
    whole = Upscaler(model, tile=0).upscale_lr(butterfly)
    tiled = Upscaler(model, tile=40, tile_overlap=24, tiling="blend").upscale_lr(butterfly)
    clamped, raw = _psnrs(whole, tiled)
    assert clamped >= 45 and raw >= 30, (clamped, raw)


def test_lightbsr_exact_tiling_equals_untiled(butterfly: np.ndarray) -> None:
    # the same weights that blend tiles only approximate: stage-wise tiles are exact up to float rounding
    model = reference_student()
    whole = Upscaler(model, tile=0).upscale_lr(butterfly)
    upscaler = Upscaler(model, tile=20)
    assert upscaler.tiling == "exact"
    ticks: list[tuple[int, int]] = []
    tiled = upscaler.upscale_lr(butterfly, progress=lambda done, total: ticks.append((done, total)))
    assert upscaler.last_run.tiling == "exact" and upscaler.last_run.tiles == 9
    assert upscaler.last_run.tile_overlap == 0
    assert ticks[-1][0] == ticks[-1][1] == 9 * (8 * 9 + 2)
    clamped, raw = _psnrs(whole, tiled)
    assert clamped >= 90 and raw >= 80, (clamped, raw)


def test_exact_tiling_needs_lightbsr_on_torch_with_a_shared_estimate() -> None:
    torch.manual_seed(0)
    kdsr = build_model("kdsr_student_m_x4").eval()
    assert Upscaler(kdsr, tile=32).tiling == "blend"  # auto falls back
    with pytest.raises(ConfigError, match="exact tiling needs a LightBSR model on the torch backend"):
        Upscaler(kdsr, tile=32, tiling="exact")
    lightbsr = build_model("lightbsr_student_x4").eval()
    assert Upscaler(lightbsr, tile=32, shared_idr=False).tiling == "blend"
    with pytest.raises(ConfigError, match="with per-tile IDRs"):
        Upscaler(lightbsr, tile=32, shared_idr=False, tiling="exact")
    with pytest.raises(ConfigError, match="exact"):
        Upscaler(PointwiseBackend(), tile=8, tiling="exact")
    with pytest.raises(ConfigError, match="unknown tiling 'seamless'"):
        Upscaler(lightbsr, tiling="seamless")


@pytest.mark.parametrize("arch", ["lightbsr_student_x4", "kdsr_student_m_x4"])
def test_freshly_initialised_models_tile_almost_exactly(butterfly: np.ndarray, arch: str) -> None:
    # freshly initialised (layer scale 1e-6) networks have a short effective receptive field:
    # a 16-pixel overlap must hide the tiles completely (measured 82 dB LightBSR, 122 dB KDSR)
    torch.manual_seed(0)
    model = build_model(arch).eval()
    whole = Upscaler(model, tile=0).upscale_lr(butterfly)
    tiled = Upscaler(model, tile=32, tile_overlap=16, tile_batch=2, tiling="blend").upscale_lr(butterfly)
    assert psnr(whole, tiled) >= 70


def test_bf16_runs_close_to_fp32(butterfly: np.ndarray) -> None:
    torch.manual_seed(0)
    model = build_model("lightbsr_student_x4").eval()
    lr = butterfly[:, :16, :16]
    fp32 = Upscaler(model, tile=0).upscale_lr(lr)
    bf16 = Upscaler(model, tile=0, precision="bf16")
    assert bf16.backend.precision == "bf16"
    assert 25 <= psnr(fp32, bf16.upscale_lr(lr)) < math.inf


# --------------------------------------------------------------------------- memory


def test_out_of_memory_halves_the_tile_and_retries(lr_image: np.ndarray) -> None:
    backend = PointwiseBackend(max_tile_pixels=16 * 16)
    reference = Upscaler(PointwiseBackend(), tile=0).upscale_lr(lr_image)
    upscaler = Upscaler(backend, tile=32, tile_overlap=8)
    with pytest.warns(RuntimeWarning, match="retrying with tile 16"):
        out = upscaler.upscale_lr(lr_image)
    assert upscaler.last_run.retries == 1 and upscaler.last_run.tile == 16
    assert backend.calls["estimate"] == 1  # the shared estimate survives the retry
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)


def test_out_of_memory_at_the_smallest_tile_is_a_clear_error(lr_image: np.ndarray) -> None:
    upscaler = Upscaler(PointwiseBackend(max_tile_pixels=4), tile=32, tile_overlap=8)
    with pytest.warns(RuntimeWarning), pytest.raises(OutOfMemoryError, match="even with 16×16 tiles"):
        upscaler.upscale_lr(lr_image)


def test_tile_follows_free_memory(lr_image: np.ndarray) -> None:
    backend = PointwiseBackend()
    per_pixel = memory.restore_bytes("lightbsr", 1)
    backend.free = 10**12
    upscaler = Upscaler(backend)
    upscaler.upscale_lr(lr_image)
    assert upscaler.last_run.tile is None  # fits: one piece
    backend.free = int(2 * 20 * 20 * per_pixel / memory.MEMORY_FRACTION)  # room for two 20² tiles, not the image
    upscaler = Upscaler(backend, tile_batch=2)
    upscaler.upscale_lr(lr_image)
    info = upscaler.last_run
    assert info.tiles == 2 and info.tile == balanced_tile(info.height, info.width, memory.MIN_TILE, info.tile_overlap)


@pytest.mark.parametrize(
    ("height", "width", "free", "batch", "kind", "expected"),
    [
        (100, 100, 10**12, 1, "cpu", None),
        (4000, 4000, 10**11, 1, "cpu", 512),  # capped
        (4000, 4000, 10**11, 1, "cuda", 1024),
        (4000, 4000, 2 * 200 * 200 * 12 * 1024, 1, "cpu", 192),  # 200 rounded down to a multiple of 16
        (4000, 4000, 2 * 200 * 200 * 12 * 1024, 4, "cpu", 96),
        (4000, 4000, 1, 1, "cpu", 32),  # floor
    ],
)
def test_auto_tile_cost_model(height: int, width: int, free: int, batch: int, kind: str, expected: int | None) -> None:
    assert memory.auto_tile(height, width, "lightbsr", free, batch=batch, device_kind=kind) == expected


def test_shared_estimate_that_cannot_fit_is_refused(lr_image: np.ndarray) -> None:
    backend = PointwiseBackend()
    backend.free = 1000  # bytes: nothing fits
    with pytest.raises(OutOfMemoryError, match="--no-shared-idr"):
        Upscaler(backend, tile=16, tile_overlap=4).upscale_lr(lr_image)
    # per-tile estimates need no whole-image pass: each tile is estimated (and restored) on its own
    per_tile = Upscaler(backend, tile=16, tile_overlap=4, shared_idr=False).upscale_lr(lr_image)
    tiles = plan_tiles(37, 29, balanced_tile(37, 29, 16, 4), 4)  # blend tiles are balanced
    assert backend.calls["estimate"] == len(tiles)
    whole = Upscaler(PointwiseBackend(), tile=0).upscale_lr(lr_image)
    # the pointwise restorer adds the channel means: tiled, each pixel gets a blend of its tiles' means
    shifts = np.array([lr_image[:, t.y : t.y + t.height, t.x : t.x + t.width].mean(axis=(1, 2)) for t in tiles])
    shifts -= lr_image.mean(axis=(1, 2))
    difference = per_tile - whole
    for c in range(3):
        assert shifts[:, c].min() - 1e-5 <= difference[c].min() <= difference[c].max() <= shifts[:, c].max() + 1e-5
    assert np.abs(difference).max() > 1e-3  # the tiles' own estimates were used, not the image's


@pytest.mark.parametrize(("height", "width", "tile"), [(37, 41, 12), (50, 33, 8), (9, 7, 4), (40, 36, 64)])
def test_lightbsr_estimate_in_tiles_equals_the_whole_estimate(height: int, width: int, tile: int) -> None:
    backend = Upscaler(reference_student(), tile=0).backend
    lr = np.random.default_rng(6).random((1, 3, height, width)).astype(np.float32)
    whole, tiled = backend.estimate(lr), backend.estimate_in_tiles(lr, tile)
    assert set(whole) == set(tiled) == {"idr_channel", "idr_spatial"}
    for name in whole:
        np.testing.assert_allclose(tiled[name], whole[name], rtol=1e-5, atol=1e-6)


def test_estimate_too_large_for_memory_is_done_in_tiles(butterfly: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    upscaler = Upscaler(reference_student(), tile=24, tile_overlap=8)
    lr = butterfly[:, :40, :40]
    expected = upscaler.upscale_lr(lr)
    calls = []
    monkeypatch.setattr(upscaler.backend, "free_memory", lambda: 50_000)  # bytes: the 40² estimate needs ~0.8 MB
    monkeypatch.setattr(upscaler.backend, "estimate", lambda lr: calls.append(lr) or {})
    np.testing.assert_allclose(upscaler.upscale_lr(lr), expected, rtol=1e-4, atol=1e-4)
    assert calls == []  # never tried in one go


# --------------------------------------------------------------------------- image layouts


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((9, 7, 3), np.uint8),
        ((9, 7, 3), np.uint16),
        ((9, 7, 3), np.float32),
        ((9, 7), np.uint8),
        ((9, 7, 1), np.uint8),
        ((9, 7, 4), np.uint8),
        ((9, 7, 2), np.uint16),
        ((9, 7, 4), np.float32),
    ],
)
def test_upscale_keeps_layout_and_dtype(shape: tuple[int, ...], dtype: type) -> None:
    rng = np.random.default_rng(1)
    peak = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    image = (rng.random(shape) * peak).astype(dtype)
    out = Upscaler(PointwiseBackend(), tile=0).upscale(image)
    expected_shape = (shape[0] * SCALE, shape[1] * SCALE, *shape[2:])
    if len(shape) == 3 and shape[2] == 1:
        expected_shape = expected_shape[:2]
    assert out.shape == expected_shape and out.dtype == dtype
    if len(shape) == 3 and shape[2] in (2, 4):
        alpha = cv2.resize(image[:, :, -1], (shape[1] * SCALE, shape[0] * SCALE), interpolation=cv2.INTER_CUBIC)
        np.testing.assert_allclose(out[:, :, -1], np.clip(alpha, 0, peak), atol=1e-6)


def test_gray_is_upscaled_as_rgb_and_returned_as_luma() -> None:
    gray = np.random.default_rng(2).integers(0, 256, (6, 5), dtype=np.uint8)
    upscaler = Upscaler(PointwiseBackend(), tile=0)
    rgb_out = upscaler.upscale(np.dstack([gray] * 3)).astype(np.float64)
    luma = rgb_out @ np.array([0.299, 0.587, 0.114])
    assert np.abs(upscaler.upscale(gray) - luma).max() <= 1.0  # rounding of each path


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 4, 3), dtype=np.int32), "int32"),
        (np.zeros((4, 4, 5), dtype=np.uint8), "shape"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "empty"),
    ],
)
def test_bad_arrays_are_refused(image: np.ndarray, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Upscaler(PointwiseBackend(), tile=0).upscale(image)


# --------------------------------------------------------------------------- options and backends


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tile": -1}, "tile"),
        ({"tile": 16, "tile_overlap": 16}, "smaller than the tile"),
        ({"tile_batch": 0}, "batch"),
        ({"tile_overlap": -2}, "overlap"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Upscaler(PointwiseBackend(), **options)


def test_default_overlap_adapts_to_small_tiles(lr_image: np.ndarray) -> None:
    upscaler = Upscaler(PointwiseBackend(), tile=16)
    upscaler.upscale_lr(lr_image)
    assert upscaler.last_run.tile_overlap == 8
    upscaler = Upscaler(PointwiseBackend(), tile=64 + 8)
    upscaler.upscale_lr(np.zeros((3, 100, 20), dtype=np.float32))
    assert upscaler.last_run.tile_overlap == DEFAULT_OVERLAP


def test_model_file_and_backend_must_match(tmp_path: Any) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"torch backend does not run \.onnx"):
        Upscaler(model, backend="torch")
    with pytest.raises(ConfigError, match="unknown model file type"):
        Upscaler(tmp_path / "model.bin")
    with pytest.raises(ModelFileError, match="no such model"):
        Upscaler(tmp_path / "missing.safetensors")


def test_no_model_means_the_bundled_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import lightbsr.weights

    upscaler = Upscaler(None, backend="torch", tile=0)
    assert upscaler.scale == 4 and upscaler.family == "lightbsr"
    monkeypatch.setattr(lightbsr.weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ConfigError, match="no bundled"):
        Upscaler(None)


def test_backend_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="takes no option"):
        Upscaler(build_model("lightbsr_student_x4"), providers=["CPUExecutionProvider"])


def test_teachers_are_refused() -> None:
    with pytest.raises(ConfigError, match="teacher"):
        Upscaler(build_model("kdsr_teacher_m_x4"))
