"""The benchmark protocol on tiny fixtures (crops of Set5 / Set14 images in tests/data/images)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lightbsr import degradation as D
from lightbsr import metrics as M
from lightbsr.errors import ConfigError, DatasetError, InputImageError, ModelFileError
from lightbsr.evaluation import (
    EvalResult,
    bicubic_upscale,
    evaluate,
    format_table,
    list_images,
    read_image_rgb8,
)

IMAGES = Path(__file__).parent / "data" / "images"
NAMES = ["baby_crop.png", "bridge_gray_crop.png", "butterfly_crop.png"]  # 96×96, 48×64 gray, 90×70


@pytest.fixture(scope="module")
def bicubic_result() -> EvalResult:
    return evaluate(bicubic_upscale(4), IMAGES, progress=False)


def test_fixture_images() -> None:
    assert [p.name for p in list_images(IMAGES)] == NAMES
    gray = cv2.imread(str(IMAGES / "bridge_gray_crop.png"), cv2.IMREAD_UNCHANGED)
    assert gray is not None and gray.ndim == 2  # the grayscale path is exercised
    rgb = read_image_rgb8(IMAGES / "bridge_gray_crop.png")
    assert rgb.shape == (48, 64, 3) and np.array_equal(rgb[..., 0], gray) and np.array_equal(rgb[..., 2], gray)


def test_bicubic_evaluation_gives_finite_scores(bicubic_result: EvalResult) -> None:
    r = bicubic_result
    assert (r.method, r.dataset, r.scale, r.setting, r.sigmas) == ("Bicubic", "images", 4, 1, (1.2, 2.4, 3.6))
    assert r.images == NAMES
    for sigma in r.sigmas:
        scores = r.scores[sigma]
        assert len(scores) == 3
        assert all(15.0 < s.psnr < 45.0 and 0.0 < s.ssim < 1.0 for s in scores)
        assert r.mean_psnr(sigma) == pytest.approx(float(np.mean([s.psnr for s in scores])))
    # Wider blur, worse bicubic reconstruction (as in the papers' Bicubic row).
    means = [r.mean_psnr(s) for s in r.sigmas]
    assert means[0] > means[1] > means[2]


def test_protocol_by_hand(bicubic_result: EvalResult) -> None:
    # Recompute one score step by step: crop 90×70 -> 88×68, degrade, bicubic ×4, 8-bit, shave 4.
    hr = torch.from_numpy(read_image_rgb8(IMAGES / "butterfly_crop.png")).permute(2, 0, 1)[None].float()
    hr = hr[..., :88, :68]
    lr = D.degrade(hr, D.isotropic_kernel(2.4), 4)
    assert lr.shape == (1, 3, 22, 17)
    sr = (D.imresize(lr / 255, 4).clamp(0, 1) * 255).round() / 255
    expected = M.psnr_y(sr, hr / 255, 4), M.ssim_y(sr, hr / 255, 4)
    got = bicubic_result.scores[2.4][2]
    assert got.name == "butterfly_crop.png"
    assert (got.psnr, got.ssim) == pytest.approx(expected, abs=1e-9)


def test_perfect_upscaler_and_json_infinity(tmp_path: Path) -> None:
    # An "oracle" that returns the HR image scores inf dB / SSIM 1, and survives strict JSON.
    shutil.copy(IMAGES / "baby_crop.png", tmp_path / "a.png")
    hr = torch.from_numpy(read_image_rgb8(tmp_path / "a.png")).permute(2, 0, 1)[None].float() / 255

    def oracle(lr: torch.Tensor) -> torch.Tensor:
        assert lr.shape == (1, 3, 24, 24) and float(lr.min()) >= 0.0 and float(lr.max()) <= 1.0
        return hr + 0.001  # survives the 8-bit rounding of SR

    result = evaluate(oracle, tmp_path, sigmas=[1.2], progress=False)
    assert result.method == "oracle"
    assert result.mean_psnr(1.2) == math.inf and result.mean_ssim(1.2) == pytest.approx(1.0)
    text = result.to_json()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert EvalResult.from_json(text) == result


def test_json_round_trip(bicubic_result: EvalResult) -> None:
    text = bicubic_result.to_json()
    data = json.loads(text)
    assert data["mean"]["2.4"]["psnr"] == pytest.approx(bicubic_result.mean_psnr(2.4))
    assert [x["name"] for x in data["images"]["1.2"]] == NAMES
    assert EvalResult.from_json(text) == bicubic_result
    assert EvalResult.from_json(bicubic_result.to_json(indent=None)) == bicubic_result
    with pytest.raises(ConfigError):
        EvalResult.from_json('{"schema": "something else"}')
    with pytest.raises(ConfigError):
        EvalResult.from_json("not json")


def test_tables(bicubic_result: EvalResult) -> None:
    table = bicubic_result.table()
    lines = table.splitlines()
    assert "images" in lines[1] and "1.2" in lines[2] and "3.6" in lines[2]
    assert lines[-1].startswith("Bicubic")
    assert lines[-1].split("|")[1].split() == [f"{bicubic_result.mean_psnr(s):.2f}" for s in bicubic_result.sigmas]
    assert f"{bicubic_result.mean_ssim(1.2):.4f}" in bicubic_result.table(ssim=True)
    other = EvalResult.from_dict({**bicubic_result.to_dict(), "method": "Other", "dataset": "Set0"})
    combined = format_table([bicubic_result, other]).splitlines()
    assert "Set0" in combined[1] and "images" in combined[1]
    assert combined[-2].startswith("Bicubic") and combined[-1].startswith("Other")
    assert "—" in combined[-1] and "—" in combined[-2]  # each method lacks the other's dataset
    assert format_table([]) == ""


def test_read_image_kinds(tmp_path: Path) -> None:
    bgr = np.zeros((12, 10, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    cv2.imwrite(str(tmp_path / "bgr.png"), bgr)
    assert read_image_rgb8(tmp_path / "bgr.png")[0, 0].tolist() == [0, 0, 200]
    bgra = np.dstack([bgr, np.full((12, 10), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "bgra.png"), bgra)
    assert read_image_rgb8(tmp_path / "bgra.png").shape == (12, 10, 3)
    deep = np.full((12, 10, 3), 65535, np.uint16)
    deep[..., 2] = 257 * 100
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    out = read_image_rgb8(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out[0, 0].tolist() == [100, 255, 255]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputImageError):
        read_image_rgb8(tmp_path / "bad.png")
    with pytest.raises(InputImageError):
        read_image_rgb8(tmp_path / "missing.png")


def test_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        evaluate(bicubic_upscale(4), tmp_path / "missing", progress=False)
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError):
        evaluate(bicubic_upscale(4), tmp_path, progress=False)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DatasetError, match=r"broken\.png"):
        evaluate(bicubic_upscale(4), tmp_path, progress=False)
    (tmp_path / "broken.png").unlink()
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match="too small"):
        evaluate(bicubic_upscale(4), tmp_path, progress=False)


def test_hr_subfolder_layout(tmp_path: Path) -> None:
    (tmp_path / "HR").mkdir()
    shutil.copy(IMAGES / "bridge_gray_crop.png", tmp_path / "HR" / "x.png")
    result = evaluate(bicubic_upscale(4), tmp_path, sigmas=[3.6], progress=False)
    assert result.images == ["x.png"] and math.isfinite(result.mean_psnr(3.6))


@pytest.mark.parametrize(
    "kwargs",
    [{"setting": 2}, {"sigmas": [0.0]}, {"sigmas": []}, {"scale": 0}],
)
def test_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        evaluate(bicubic_upscale(4), IMAGES, progress=False, **kwargs)  # type: ignore[arg-type]


def test_wrong_upscaler_output_shape() -> None:
    with pytest.raises(ModelFileError, match=r"returned 1×3×\d+×\d+ for a .* ×4"):
        evaluate(bicubic_upscale(2), IMAGES, scale=4, sigmas=[1.2], progress=False)


def test_non_finite_upscaler_output_is_refused() -> None:
    def nan_model(lr: torch.Tensor) -> torch.Tensor:
        return torch.full((1, 3, 4 * lr.shape[2], 4 * lr.shape[3]), float("nan"))

    with pytest.raises(ModelFileError, match="NaN or infinite"):
        evaluate(nan_model, IMAGES, scale=4, sigmas=[1.2], progress=False)
