"""The tile plan and blending window (lightbsr.runtime.tiling): properties, edge cases, the documented examples."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightbsr.runtime import tiling
from lightbsr.runtime.tiling import (
    Blender,
    Tile,
    axis_starts,
    overlap_margin,
    plan_tiles,
    raised_cosine_ramp,
    tile_window,
)


@st.composite
def plans(draw: st.DrawFn, max_side: int = 80) -> tuple[int, int, int, int]:
    tile = draw(st.integers(1, 40))
    overlap = draw(st.integers(0, tile - 1))
    return draw(st.integers(1, max_side)), draw(st.integers(1, max_side)), tile, overlap


def _coverage(tiles: list[Tile], height: int, width: int) -> np.ndarray:
    count = np.zeros((height, width), dtype=int)
    for t in tiles:
        rows, cols = t.slices()
        count[rows, cols] += 1
    return count


@settings(max_examples=150, deadline=None)
@given(plans())
def test_tiles_lie_inside_and_cover_the_image(plan: tuple[int, int, int, int]) -> None:
    height, width, tile, overlap = plan
    tiles = plan_tiles(height, width, tile, overlap)
    assert {(t.height, t.width) for t in tiles} == {(min(tile, height), min(tile, width))}
    for t in tiles:
        assert t.y >= 0 and t.y + t.height <= height and t.x >= 0 and t.x + t.width <= width
    assert (_coverage(tiles, height, width) >= 1).all()
    assert tiles == sorted(tiles, key=lambda t: (t.y, t.x))  # row by row


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300), st.integers(1, 64), st.data())
def test_axis_starts_follow_the_rule(length: int, tile: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, tile - 1))
    starts = axis_starts(length, tile, overlap)
    if length <= tile:
        assert starts == [0]
        return
    stride = tile - overlap
    assert starts[0] == 0 and starts[-1] == length - tile
    assert all(b > a for a, b in itertools.pairwise(starts))
    # every neighbour pair overlaps by exactly O, except the clamped last pair (≥ O, < T)
    overlaps = [a + tile - b for a, b in itertools.pairwise(starts)]
    assert all(o == overlap for o in overlaps[:-1])
    assert overlap <= overlaps[-1] < tile
    assert (overlaps[-1] == overlap) == ((length - tile) % stride == 0)
    # no tile is redundant: without the last one the axis would not be covered
    assert starts[-2] + tile < length


@settings(max_examples=100, deadline=None)
@given(plans(max_side=60), st.sampled_from([1, 2, 4]))
def test_windows_are_positive_somewhere_everywhere_and_normalise_to_one(
    plan: tuple[int, int, int, int], scale: int
) -> None:
    height, width, tile, overlap = plan
    tiles = plan_tiles(height, width, tile, overlap)
    total = np.zeros((height * scale, width * scale))
    for t in tiles:
        window = tile_window(t, height, width, overlap, scale)
        assert window.shape == (t.height * scale, t.width * scale)
        assert window.min() >= 0 and window.max() <= 1
        rows, cols = t.slices(scale)
        total[rows, cols] += window
    assert total.min() > 0  # the normalised blend is defined everywhere
    # blending a constant image gives the constant back: the weights are normalised
    blender = Blender(height, width, overlap, scale, channels=1)
    for t in tiles:
        blender.add(t, np.full((1, t.height * scale, t.width * scale), 0.7, dtype=np.float32))
    np.testing.assert_allclose(blender.result(), 0.7, rtol=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 40), st.data(), st.integers(1, 5), st.sampled_from([1, 4]))
def test_windows_sum_to_one_when_overlaps_are_exact(tile: int, data: st.DataObject, steps: int, scale: int) -> None:
    overlap = data.draw(st.integers(0, tile // 2))
    length = tile + steps * (tile - overlap)  # (L - T) is a multiple of the stride
    tiles = plan_tiles(length, 1, tile, overlap)
    total = np.zeros(length * scale)
    for t in tiles:
        total[t.slices(scale)[0]] += tile_window(t, length, 1, overlap, scale)[:, 0]
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_image_smaller_than_a_tile_is_one_unweighted_tile() -> None:
    assert plan_tiles(5, 7, 64, 16) == [Tile(0, 0, 5, 7)]
    assert (tile_window(Tile(0, 0, 5, 7), 5, 7, 16, 4) == 1).all()


def test_tile_equal_to_the_image_is_one_tile() -> None:
    assert plan_tiles(64, 64, 64, 16) == [Tile(0, 0, 64, 64)]
    assert plan_tiles(64, 65, 64, 16) == [Tile(0, 0, 64, 64), Tile(0, 1, 64, 64)]


def test_window_shape_on_a_worked_example() -> None:
    # overlap 8 → margin 2 zeros, ramp of 4, at the inner side only; scale 1
    left = tile_window(Tile(0, 0, 1, 16), 1, 40, 8)[0]
    ramp = raised_cosine_ramp(4)
    np.testing.assert_allclose(left[:10], 1.0)
    np.testing.assert_allclose(left[10:14], ramp[::-1], rtol=1e-6)
    np.testing.assert_allclose(left[14:], 0.0)
    middle = tile_window(Tile(0, 8, 1, 16), 1, 40, 8)[0]
    np.testing.assert_allclose(middle[:2], 0.0)
    np.testing.assert_allclose(middle[2:6], ramp, rtol=1e-6)
    np.testing.assert_allclose(middle[6:10], 1.0)
    assert ramp[0] > 0 and np.allclose(ramp + ramp[::-1], 1.0)


@pytest.mark.parametrize(
    ("overlap", "margin"),
    # ⌊O/4⌋ written out (not computed): small odd overlaps are where ⌊O/4⌋ and other roundings part ways
    [(0, 0), (1, 0), (2, 0), (3, 0), (4, 1), (5, 1), (6, 1), (7, 1), (9, 2), (11, 2), (13, 3), (15, 3)],
)
def test_overlap_margin_worked_examples(overlap: int, margin: int) -> None:
    assert overlap_margin(overlap) == margin


def test_window_of_an_odd_overlap_worked_example() -> None:
    # overlap 7 → margin ⌊7/4⌋ = 1 zero, then a ramp of 7 − 2 = 5, on each inner side of a 12-pixel tile;
    # at scale 2 every count doubles
    ramp = raised_cosine_ramp(5)
    inner = tile_window(Tile(0, 9, 1, 12), 1, 40, 7)[0]  # both sides inside the image
    np.testing.assert_allclose(inner[:1], 0.0)
    np.testing.assert_allclose(inner[1:6], ramp, rtol=1e-6)
    np.testing.assert_allclose(inner[6:11], ramp[::-1], rtol=1e-6)
    np.testing.assert_allclose(inner[11:], 0.0)
    doubled = tile_window(Tile(0, 9, 1, 12), 1, 40, 7, scale=2)[0]
    np.testing.assert_allclose(doubled[:2], 0.0)
    np.testing.assert_allclose(doubled[2:12], raised_cosine_ramp(10), rtol=1e-6)
    np.testing.assert_allclose(doubled[12:22], raised_cosine_ramp(10)[::-1], rtol=1e-6)
    np.testing.assert_allclose(doubled[22:], 0.0)


def test_zero_overlap_pastes_tiles() -> None:
    image = np.random.default_rng(0).random((1, 10, 9)).astype(np.float32)
    blender = Blender(10, 9, 0, 1, channels=1)
    for t in plan_tiles(10, 9, 4, 0):
        rows, cols = t.slices()
        blender.add(t, image[:, rows, cols])
    np.testing.assert_array_equal(blender.result(), image)


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (8, 8), (8, -1), (8, 9)])
def test_bad_plan_arguments_are_refused(tile: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="tile"):
        plan_tiles(10, 10, tile, overlap)


def test_documented_examples() -> None:
    result = doctest.testmod(tiling)
    assert result.attempted >= 2 and result.failed == 0


@settings(max_examples=200, deadline=None)
@given(plans(max_side=300))
def test_the_balanced_tile_is_the_smallest_with_no_more_tiles(plan: tuple[int, int, int, int]) -> None:
    height, width, tile, overlap = plan
    balanced = tiling.balanced_tile(height, width, tile, overlap)
    count = len(plan_tiles(height, width, tile, overlap))
    assert overlap < balanced <= tile
    tiles = plan_tiles(height, width, balanced, overlap)
    assert len(tiles) <= count
    assert sum(t.height * t.width for t in tiles) <= count * min(tile, height) * min(tile, width)
    if balanced - 1 > overlap:
        assert len(plan_tiles(height, width, balanced - 1, overlap)) > count


def test_balanced_tiles_cut_the_overlap_work_of_a_clamped_last_tile() -> None:
    assert len(plan_tiles(512, 512, 256, 24)) == 9  # 3 × 3 tiles of 256: 2.25× the pixels of the image
    assert tiling.balanced_tile(512, 512, 256, 24) == 187  # 3 × 3 tiles of 187: 1.2×
    assert tiling.balanced_tile(512, 512, 512, 24) == 512  # one tile stays the image
    assert tiling.balanced_tile(100, 60, 64, 16) == 60  # the axis that is not split keeps one tile
