"""Scenes and shared degradation estimates: the cut detector, the IDR each frame gets, the Upscaler's ``idr=`` hook."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lightbsr.errors import ConfigError
from lightbsr.runtime import Upscaler
from lightbsr.runtime.scenes import (
    DEFAULT_SCENE_THRESHOLD,
    CutDetector,
    SceneIDR,
    histogram_distance,
    merge_idr,
    pan_distances,
    thumbnail_histogram,
)
from lightbsr.runtime.scenes import main as scenes_main

TRAIN = Path(__file__).parent / "data" / "train"


def read_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


def pan(image: np.ndarray, frames: int, size: tuple[int, int], step: int) -> list[np.ndarray]:
    """``frames`` windows of ``size`` (h, w) sliding right and down by ``step`` pixels a frame."""
    height, width = size
    return [
        np.ascontiguousarray(image[i * step : i * step + height, i * step : i * step + width]) for i in range(frames)
    ]


def test_pans_over_training_crops_cut_exactly_between_images() -> None:
    """Pans of 2 px a frame over 48×64 windows of the four training crops: three cuts, found where they are."""
    crops = sorted(TRAIN.glob("*.png"))
    assert len(crops) == 4
    frames: list[np.ndarray] = []
    starts = []
    for path in crops:
        starts.append(len(frames))
        frames += pan(read_rgb(path), 12, (48, 64), 2)
    detector = CutDetector(DEFAULT_SCENE_THRESHOLD)
    found = [i for i, frame in enumerate(frames) if detector(frame)[0]]
    assert found == starts


def test_calibration_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """python -m lightbsr.runtime.scenes on the training crops (doubled, as it halves them): no false or missed cut."""
    for path in sorted(TRAIN.glob("*.png")):
        cv2.imwrite(str(tmp_path / path.name), cv2.resize(cv2.imread(str(path)), (192, 192)))
    assert scenes_main(["--images", str(tmp_path), "--frames", "8", "--step", "1", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("0 of 28 over 0.2" in line and "0 of 3 missed" in line for line in lines)
    within, cuts = pan_distances([read_rgb(TRAIN / "abbey_crop.png")] * 2, 3, (48, 64), 4)
    assert len(within) == 4 and cuts == [
        pytest.approx(
            histogram_distance(
                *[thumbnail_histogram(read_rgb(TRAIN / "abbey_crop.png")[y : y + 48, y : y + 64]) for y in (8, 0)]
            )
        )
    ]
    with pytest.raises(ConfigError, match="too small"):
        pan_distances([read_rgb(TRAIN / "abbey_crop.png")], 20, (48, 64), 4)


def test_histogram_distance_is_a_share_of_pixels() -> None:
    black, white = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    assert histogram_distance(thumbnail_histogram(black), thumbnail_histogram(black)) == 0.0
    assert histogram_distance(thumbnail_histogram(black), thumbnail_histogram(white)) == pytest.approx(1.0)
    half = black.copy()
    half[:4] = 255
    assert histogram_distance(thumbnail_histogram(black), thumbnail_histogram(half)) == pytest.approx(0.5)
    deep = black.astype(np.uint16) * 257
    assert thumbnail_histogram(deep).sum() == pytest.approx(1.0)


def test_detector_rejects_bad_thresholds_and_frames() -> None:
    for threshold in (0.0, -1.0, 1.5):
        with pytest.raises(ConfigError, match="histogram distance"):
            CutDetector(threshold)
    with pytest.raises(ConfigError, match="RGB frame"):
        CutDetector()(np.zeros((4, 4), np.uint8))


# --------------------------------------------------------------------------- which IDR each frame gets


class FakeEstimator:
    """An IDR that identifies the frame it was estimated on (its first pixel), with or without a per-pixel map."""

    def __init__(self, per_pixel: bool) -> None:
        self.per_pixel = per_pixel
        self.calls: list[int] = []

    def __call__(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        tag = int(frame[0, 0, 0])
        self.calls.append(tag)
        idr = {"global": np.full((1, 4), tag, np.float32)}
        if self.per_pixel:
            idr["map"] = np.full((1, 2, *frame.shape[:2]), tag, np.float32)
        return idr


CUTS = [True, False, False, True, False]  # two scenes: frames 0–2 and 3–4


def run_policy(mode: str, per_pixel: bool) -> tuple[list[dict[str, np.ndarray] | None], SceneIDR, FakeEstimator]:
    estimator = FakeEstimator(per_pixel)
    policy = SceneIDR(mode, estimator)
    idrs = [
        policy.next(np.full((4, 4, 3), index, np.uint8), index, index / 25, cut, 1.0 if cut else 0.01)
        for index, cut in enumerate(CUTS)
    ]
    return idrs, policy, estimator


@pytest.mark.parametrize(
    ("mode", "global_tags"),
    [("per-frame", [0, 1, 2, 3, 4]), ("per-scene", [0, 0, 0, 3, 3]), ("fixed", [0, 0, 0, 0, 0])],
)
@pytest.mark.parametrize("per_pixel", [False, True])
def test_each_frame_gets_its_scenes_global_idr(mode: str, global_tags: list[int], per_pixel: bool) -> None:
    idrs, policy, estimator = run_policy(mode, per_pixel)
    assert [int(idr["global"][0, 0]) for idr in idrs if idr is not None] == global_tags
    if per_pixel:  # the per-pixel map always comes from the frame itself, so every frame is estimated
        assert [int(idr["map"][0, 0, 0, 0]) for idr in idrs if idr is not None] == [0, 1, 2, 3, 4]
        assert estimator.calls == [0, 1, 2, 3, 4]
    else:  # a global-only IDR (KDSR) is estimated once per scene (or once)
        assert estimator.calls == sorted(set(global_tags))
    assert policy.estimates == len(estimator.calls)
    assert [(s.start, s.end) for s in policy.scenes] == [(0, 2), (3, 4)]  # recorded in every mode
    assert policy.scenes[1].time == pytest.approx(3 / 25)


def test_without_an_estimator_only_per_frame_works() -> None:
    policy = SceneIDR("per-frame", None)
    assert policy.next(np.zeros((4, 4, 3), np.uint8), 0, 0.0, True, 1.0) is None
    assert len(policy.scenes) == 1
    for mode in ("per-scene", "fixed"):
        with pytest.raises(ConfigError, match="split graphs"):
            SceneIDR(mode, None)
    with pytest.raises(ConfigError, match="unknown IDR mode"):
        SceneIDR("sometimes", None)


def test_merge_idr_needs_the_frames_own_map() -> None:
    scene = {"global": np.zeros((1, 4)), "map": np.zeros((1, 2, 3, 3))}
    with pytest.raises(ConfigError, match="per-pixel"):
        merge_idr(scene, None)
    assert merge_idr({"global": np.zeros((1, 4))}, None)["global"].shape == (1, 4)


# --------------------------------------------------------------------------- the Upscaler's idr= hook


@pytest.fixture(scope="module")
def upscaler(tiny_reference_onnx: Path) -> Upscaler:
    return Upscaler(tiny_reference_onnx, device="cpu", tile=0)


def test_given_idr_equals_the_images_own(upscaler: Upscaler) -> None:
    image = read_rgb(TRAIN / "abbey_crop.png")[:20, :24]
    np.testing.assert_array_equal(upscaler.upscale(image, idr=upscaler.estimate_image(image)), upscaler.upscale(image))
    tiled = Upscaler(upscaler.backend, tile=12, tile_overlap=4)
    np.testing.assert_array_equal(tiled.upscale(image, idr=tiled.estimate_image(image)), tiled.upscale(image))


def test_merged_idr_keeps_the_frames_own_map(upscaler: Upscaler) -> None:
    image = read_rgb(TRAIN / "abbey_crop.png")[:20, :24]
    other = read_rgb(TRAIN / "islet_crop.png")[:20, :24]
    own, theirs = upscaler.estimate_image(image), upscaler.estimate_image(other)
    idr = merge_idr(theirs, own)
    np.testing.assert_array_equal(idr["idr_spatial"], own["idr_spatial"])
    np.testing.assert_array_equal(idr["idr_channel"], theirs["idr_channel"])


def test_another_images_idr_changes_the_output(tiny_kdsr_onnx: Path) -> None:
    """KDSR's IDR is global: another image's makes a different restoration (what sharing one per scene changes)."""
    kdsr = Upscaler(tiny_kdsr_onnx, device="cpu", tile=0)
    image = read_rgb(TRAIN / "abbey_crop.png")[:20, :24]
    other = read_rgb(TRAIN / "islet_crop.png")[:20, :24]
    assert set(kdsr.estimate_image(image)) == {"idr"}
    changed = kdsr.upscale(image, idr=kdsr.estimate_image(other)).astype(int) - kdsr.upscale(image)
    assert np.abs(changed).mean() > 0.1  # levels of 255


def test_given_idr_is_checked(upscaler: Upscaler) -> None:
    image = read_rgb(TRAIN / "abbey_crop.png")
    idr = upscaler.estimate_image(image[:20, :24])
    with pytest.raises(ConfigError, match="per-pixel degradation estimate"):
        upscaler.upscale(image[:16, :16], idr=idr)
    per_tile = Upscaler(upscaler.backend, tile=8, shared_idr=False)
    with pytest.raises(ConfigError, match="estimates per tile"):
        per_tile.upscale(image[:20, :24], idr=idr)
