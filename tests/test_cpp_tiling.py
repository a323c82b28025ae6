"""The C++ tiling library (cpp/, built with cmake) against lightbsr.runtime.tiling, the specification.

Plans must be equal exactly; windows and blends (float32) to 1e-6.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cpp_build import build_target

from lightbsr.runtime.tiling import Blender, plan_tiles, tile_window

# (height, width, tile, overlap, scale)
EDGE_CASES = [
    (20, 30, 64, 16, 4),  # image smaller than the tile: one tile of the image's size
    (5, 100, 32, 8, 2),  # smaller along one axis only
    (64, 64, 64, 16, 2),  # exactly one tile
    (96, 96, 32, 0, 1),  # exact multiple, overlap 0: tiles pasted side by side
    (112, 64, 32, 16, 2),  # (L − T) a multiple of the stride: no clamped last tile
    (70, 45, 16, 0, 2),  # overlap 0, clamped last tiles
    (1, 1, 1, 0, 4),  # 1-pixel image, 1-pixel tile
    (1, 50, 16, 4, 1),  # 1-pixel-high image
    (50, 1, 16, 4, 3),  # 1-pixel-wide image
    (3, 4, 1, 0, 2),  # 1-pixel tiles
    (40, 33, 8, 7, 1),  # overlap = tile − 1 (stride 1)
    (100, 60, 64, 16, 1),  # the docstring examples
    (10, 150, 64, 16, 1),
    (130, 97, 64, 24, 4),  # the runtime's default overlap, ×4
    (57, 83, 20, 5, 3),  # margin ⌊5/4⌋ = 1, odd ramp
    (90, 90, 31, 13, 4),
    (9, 9, 4, 3, 4),  # very small tiles: start and end sides overlap and multiply
    (6, 7, 2, 1, 1),
]


def sweep_cases(seed: int, count: int, max_tiles: int = 400) -> list[tuple[int, int, int, int]]:
    """Random (height, width, tile, overlap) with at most ``max_tiles`` tiles (plans stay cheap to list)."""
    rng = np.random.default_rng(seed)
    cases: list[tuple[int, int, int, int]] = []
    while len(cases) < count:
        tile = int(rng.integers(1, 130))
        case = (int(rng.integers(1, 600)), int(rng.integers(1, 600)), tile, int(rng.integers(0, tile)))
        per_axis = [1 if side <= tile else -(-(side - tile) // (tile - case[3])) + 1 for side in case[:2]]
        if per_axis[0] * per_axis[1] <= max_tiles:
            cases.append(case)
    return cases


@pytest.fixture(scope="module")
def tile_plan() -> Path:
    return build_target("tile_plan")


def _cpp(tool: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True, check=False)


def _cpp_plan(tool: Path, height: int, width: int, tile: int, overlap: int, scale: int, *flags: str) -> dict:
    done = _cpp(tool, height, width, tile, overlap, scale, *flags)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _synthetic_tile(index: int, channels: int, height: int, width: int) -> np.ndarray:
    """What tile_plan --blend feeds the C++ Blender: ((7i + 3c + 5r + 11k) mod 17) / 16, float32."""
    c, r, k = np.meshgrid(np.arange(channels), np.arange(height), np.arange(width), indexing="ij")
    return (((7 * index + 3 * c + 5 * r + 11 * k) % 17) / 16).astype(np.float32)


@pytest.mark.parametrize(("height", "width", "tile", "overlap", "scale"), EDGE_CASES)
def test_plan_windows_and_blend_match_python(
    tile_plan: Path, height: int, width: int, tile: int, overlap: int, scale: int
) -> None:
    got = _cpp_plan(tile_plan, height, width, tile, overlap, scale, "--windows", "--blend")
    tiles = plan_tiles(height, width, tile, overlap)
    assert [tuple(t) for t in got["tiles"]] == [(t.y, t.x, t.height, t.width) for t in tiles]

    assert len(got["windows"]) == len(tiles)
    for t, window in zip(tiles, got["windows"], strict=True):
        expected = tile_window(t, height, width, overlap, scale)
        np.testing.assert_allclose(np.asarray(window).reshape(expected.shape), expected, rtol=0, atol=1e-6)

    blender = Blender(height, width, overlap, scale)
    for index, t in enumerate(tiles):
        blender.add(t, _synthetic_tile(index, 3, t.height * scale, t.width * scale))
    expected = blender.result()
    np.testing.assert_allclose(np.asarray(got["blend"]).reshape(expected.shape), expected, rtol=0, atol=1e-6)


def test_plans_match_python_on_a_sweep(tile_plan: Path) -> None:
    cases = sweep_cases(seed=9, count=400)
    lines = "".join(" ".join(map(str, case)) + "\n" for case in cases)
    done = subprocess.run([str(tile_plan), "--stdin"], input=lines, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    plans = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(plans) == len(cases)
    for (height, width, tile, overlap), got in zip(cases, plans, strict=True):
        expected = [[t.y, t.x, t.height, t.width] for t in plan_tiles(height, width, tile, overlap)]
        assert (got["height"], got["width"], got["tile"], got["overlap"]) == (height, width, tile, overlap)
        assert got["tiles"] == expected, (height, width, tile, overlap)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [(10, 10, 0, 0), (10, 10, 8, 8), (10, 10, 8, 9), (10, 10, 8, -1), (0, 10, 8, 2), (10, 0, 8, 2), (-3, 5, 4, 1)],
)
def test_invalid_arguments_fail_with_the_python_message(
    tile_plan: Path, height: int, width: int, tile: int, overlap: int
) -> None:
    with pytest.raises(ValueError) as python_error:
        plan_tiles(height, width, tile, overlap)
    done = _cpp(tile_plan, height, width, tile, overlap)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"tile_plan: error: {python_error.value}\n"


def test_tile_cap_matches_python(tile_plan: Path) -> None:
    """lightbsr-trt caps a tile larger than the engine's profile as the Python runtime does (it used to throw)."""
    from lightbsr.runtime.tiling import cap_tile

    rng = np.random.default_rng(3)
    cases = [(512, 24, 256, 256), (64, 24, 48, 32), (32, 8, 32, 64), (16, 15, 8, 8), (100, 0, 64, 96)]
    cases += [(int(t), int(rng.integers(0, t)), int(rng.integers(1, 300)), int(rng.integers(1, 300))) for t in
              rng.integers(1, 600, size=40)]  # fmt: skip
    for tile, overlap, max_h, max_w in cases:
        done = _cpp(tile_plan, "--cap", tile, overlap, max_h, max_w)
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        assert (got["tile"], got["overlap"], got["capped"]) == cap_tile(tile, overlap, max_h, max_w), (tile, max_h)
