"""Shape profiles: parsing NCHW specs and deriving every other input's shape from lr (lightbsr.tensorrt.engine)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightbsr.errors import ConfigError
from lightbsr.tensorrt.engine import (
    ShapeRange,
    check_range,
    derive_input_shape,
    derive_profile,
    format_shape,
    parse_shape,
)

RESTORER = {"lr": (None, 3, None, None), "idr_channel": (None, 48), "idr_spatial": (None, 8, None, None)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1x3x64x64", ("lr", (1, 3, 64, 64))),
        ("lr:4x3x512x256", ("lr", (4, 3, 512, 256))),
        ("'lr':2x3x8x8", ("lr", (2, 3, 8, 8))),
        (" idr_spatial:1x8x64x64 ", ("idr_spatial", (1, 8, 64, 64))),
    ],
)
def test_parse_shape(text: str, expected: tuple[str, tuple[int, ...]]) -> None:
    assert parse_shape(text) == expected


@pytest.mark.parametrize("text", ["", "lr:", "1x3x64x", "ax3x64x64", "1x3x0x64", "1,3,64,64", "lr=1x3x64x64"])
def test_parse_shape_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="shape"):
        parse_shape(text)


@given(st.lists(st.integers(1, 4096), min_size=1, max_size=5))
def test_format_parse_round_trip(shape: list[int]) -> None:
    assert parse_shape(f"x:{format_shape(shape)}") == ("x", tuple(shape))


def test_check_range_rejects_disorder_and_rank() -> None:
    with pytest.raises(ConfigError, match="min ≤ opt ≤ max"):
        check_range("lr", ShapeRange((1, 3, 64, 64), (1, 3, 32, 64), (1, 3, 128, 128)))
    with pytest.raises(ConfigError, match="ranks"):
        check_range("lr", ShapeRange((1, 3, 64, 64), (1, 3, 64), (1, 3, 64, 64)))


@pytest.mark.parametrize(
    ("name", "dims", "expected"),
    [
        ("lr", (None, 3, None, None), (2, 3, 40, 56)),
        ("idr_channel", (None, 48), (2, 48)),
        ("idr_spatial", (None, 8, None, None), (2, 8, 40, 56)),
        ("idr", (None, 64), (2, 64)),
        ("drp", (None, 15), (2, 15)),
        ("drp", (None, 18, None, None), (2, 18, 40, 56)),
        ("hr", (None, 3, None, None), (2, 3, 160, 224)),
        ("idr_channel", (2, 48), (2, 48)),  # static dims that agree are fine
        ("mask", (1, 1), (1, 1)),  # unknown but fully static: kept as is
    ],
)
def test_derive_input_shape(name: str, dims: tuple[int | None, ...], expected: tuple[int, ...]) -> None:
    assert derive_input_shape(name, dims, (2, 3, 40, 56), scale=4) == expected


@pytest.mark.parametrize(
    ("name", "dims", "scale", "message"),
    [
        ("mask", (None, 1), 4, "does not size it"),  # unknown input with a dynamic dim
        ("idr_channel", (None, None), 4, "dimension 1 is dynamic"),  # channels must be static
        ("idr_channel", (1, 48), 4, "fixed to 1"),  # static batch 1 against an lr batch of 2
        ("lr", (None, 1, None, None), 4, "fixed to 1"),  # grey-scale model, RGB shapes
        ("hr", (None, 3, None, None), None, "lightbsr.scale"),
        ("idr_spatial", (None, 8, None), 4, "has 3 dims"),
        ("drp", (None, 15, 1), 4, "says 2 or 4"),
    ],
)
def test_derive_input_shape_errors(name: str, dims: tuple[int | None, ...], scale: int | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        derive_input_shape(name, dims, (2, 3, 40, 56), scale=scale)


def test_derive_profile_of_the_restorer_graph() -> None:
    lr = ShapeRange((1, 3, 64, 64), (1, 3, 256, 256), (4, 3, 512, 512))
    profile = derive_profile(lr, RESTORER)
    assert list(profile) == ["lr", "idr_channel", "idr_spatial"]
    assert profile["lr"] == lr
    assert profile["idr_channel"] == ShapeRange((1, 48), (1, 48), (4, 48))
    assert profile["idr_spatial"] == ShapeRange((1, 8, 64, 64), (1, 8, 256, 256), (4, 8, 512, 512))


def test_derive_profile_leaves_static_inputs_out_and_needs_lr() -> None:
    profile = derive_profile(ShapeRange((1, 3, 8, 8), (1, 3, 8, 8), (2, 3, 8, 8)), {"lr": (None, 3, 8, 8), "k": (1, 2)})
    assert list(profile) == ["lr"]
    with pytest.raises(ConfigError, match="no 'lr' input"):
        derive_profile(ShapeRange((1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8)), {"input": (None, 3, None, None)})


@st.composite
def lr_ranges(draw: st.DrawFn) -> ShapeRange:
    dims = [sorted(draw(st.lists(st.integers(1, 1024), min_size=3, max_size=3))) for _ in range(3)]
    return ShapeRange(*((n, 3, h, w) for n, h, w in zip(*dims, strict=True)))


@given(lr_ranges(), st.sampled_from([2, 3, 4]))
def test_derived_ranges_are_valid_profiles(lr: ShapeRange, scale: int) -> None:
    inputs = {**RESTORER, "hr": (None, 3, None, None), "drp": (None, 15)}
    profile = derive_profile(lr, inputs, scale)
    for which in range(3):
        n, _, h, w = lr[which]
        assert profile["idr_channel"][which] == (n, 48)
        assert profile["idr_spatial"][which] == (n, 8, h, w)
        assert profile["hr"][which] == (n, 3, scale * h, scale * w)
        assert profile["drp"][which] == (n, 15)
    for ranges in profile.values():
        check_range("x", ranges)  # min ≤ opt ≤ max holds for every derived input
