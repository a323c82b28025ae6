"""The models are the published architectures: they reproduce the authors' reference vectors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import load_reference_model, reference_io, reference_meta, reference_state_dict, relative_error

from lightbsr.errors import CheckpointError, ConfigError
from lightbsr.models import (
    REFERENCE_ARCHS,
    KDSRTeacher,
    LightBSR,
    LightBSRTeacher,
    ModelConfig,
    build_model,
    detect_reference_arch,
    known_archs,
    load_reference_checkpoint,
)
from lightbsr.models.kdsr import dynamic_depthwise_conv_grouped, dynamic_depthwise_conv_shifted

TOLERANCE = 1e-4


def _outputs(model: torch.nn.Module, name: str, io: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    lr = io["in.lr"]
    if name.startswith("lightbsr"):
        extra = (io["in.drp"],) if isinstance(model, LightBSRTeacher) else ()
        inputs = model.estimator_input(lr, *extra) if extra else lr
        channel, spatial = model.estimate(lr, *extra)
        return {
            "estimator_features": model.estimator(inputs),
            "idr_channel": channel,
            "idr_spatial": spatial,
            "sr": model(lr, *extra),
        }
    extra = (io["in.hr"],) if isinstance(model, KDSRTeacher) else ()
    feature, idr = model.estimate_features(lr, *extra)
    return {"idr_distill": feature, "idr": idr, "sr": model(lr, *extra)}


@pytest.fixture(scope="module", params=REFERENCE_ARCHS)
def reference_model(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module]:
    name = request.param
    return name, load_reference_model(name)


@torch.no_grad()
def test_reproduces_reference_outputs(reference_model: tuple[str, torch.nn.Module]) -> None:
    name, model = reference_model
    io = reference_io(name)
    outputs = _outputs(model, name, io)
    expected = {key.removeprefix("out."): value for key, value in io.items() if key.startswith("out.")}
    assert set(outputs) == set(expected)
    for key, ref in expected.items():
        assert outputs[key].shape == ref.shape, key
        assert relative_error(outputs[key], ref) <= TOLERANCE, f"{name} {key}"


def test_parameter_counts_match_reference(reference_model: tuple[str, torch.nn.Module]) -> None:
    name, model = reference_model
    assert sum(p.numel() for p in model.parameters()) == reference_meta(name)["params"]


def test_student_parameter_counts_exact() -> None:
    assert sum(p.numel() for p in build_model("lightbsr_student_x4").parameters()) == 3_259_971
    assert sum(p.numel() for p in build_model("kdsr_student_m_x4").parameters()) == 5_795_099


@torch.no_grad()
def test_forward_is_restore_of_estimate(reference_model: tuple[str, torch.nn.Module]) -> None:
    name, model = reference_model
    io = reference_io(name)
    lr = io["in.lr"]
    extra = (io["in.drp"],) if "in.drp" in io else (io["in.hr"],) if "in.hr" in io else ()
    torch.testing.assert_close(model.restore(lr, model.estimate(lr, *extra)), model(lr, *extra))


@pytest.mark.parametrize(
    "arch", ["lightbsr_student_x2", "lightbsr_student_x3", "kdsr_student_m_x2", "kdsr_student_m_x3"]
)
@torch.no_grad()
def test_other_scales_shapes(arch: str) -> None:
    model = build_model(arch).eval()
    scale = ModelConfig.from_arch(arch).scale
    assert model(torch.rand(2, 3, 13, 10)).shape == (2, 3, 13 * scale, 10 * scale)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (17, 9)])
@torch.no_grad()
def test_lightbsr_odd_sizes(size: tuple[int, int]) -> None:
    model = build_model("lightbsr_student_x4").eval()
    h, w = size
    channel, spatial = model.estimate(torch.rand(1, 3, h, w))
    assert channel.shape == (1, 48) and spatial.shape == (1, 8, h, w)
    assert model(torch.rand(1, 3, h, w)).shape == (1, 3, 4 * h, 4 * w)


@torch.no_grad()
def test_teacher_accepts_drp_vector_or_map() -> None:
    model = load_reference_model("lightbsr_teacher_x4_setting2")
    lr = torch.rand(2, 3, 11, 9)
    drp = torch.randn(2, 18)
    map_form = drp[:, :, None, None].expand(-1, -1, 11, 9)
    torch.testing.assert_close(model(lr, drp), model(lr, map_form))
    with pytest.raises(ConfigError):
        model(lr, torch.randn(2, 15))


def test_teacher_drp_from_kernel_uses_pca_basis() -> None:
    model = LightBSRTeacher(setting=2)
    model.pca_basis.copy_(torch.randn(15, 441))
    kernels = torch.rand(3, 21, 21)
    drp = model.drp(kernels, torch.tensor([0.0, 5.0, 25.0]))
    assert drp.shape == (3, 18)
    torch.testing.assert_close(drp[:, :15], kernels.flatten(1) @ model.pca_basis.t())
    assert drp[2, 15:].tolist() == [25.0, 25.0, 25.0]


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_dynamic_conv_shifted_equals_grouped(b: int, c: int, h: int, w: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g)
    k = torch.randn(b, c, 3, 3, generator=g)
    torch.testing.assert_close(dynamic_depthwise_conv_shifted(x, k), dynamic_depthwise_conv_grouped(x, k))


@torch.no_grad()
def test_kdsr_samples_are_independent_in_a_batch() -> None:
    model = build_model("kdsr_student_m_x2").eval()
    lr = torch.rand(2, 3, 8, 6)
    both = model(lr)
    torch.testing.assert_close(both[1:], model(lr[1:]), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------- converter strictness


def test_detects_every_reference_arch() -> None:
    for name in REFERENCE_ARCHS:
        assert detect_reference_arch(reference_state_dict(name)).arch == name


def test_unknown_key_is_named() -> None:
    state = reference_state_dict("lightbsr_student_x4")
    state["G.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unknown key.*G\.extra\.weight"):
        load_reference_checkpoint(state, "lightbsr_student_x4")


def test_missing_key_is_named() -> None:
    state = reference_state_dict("kdsr_student_m_x4")
    del state["G.body.0.body.7.conv1.bias"]
    with pytest.raises(CheckpointError, match=r"missing key.*blocks\.7\.conv\.bias"):
        load_reference_checkpoint(state, "kdsr_student_m_x4")


def test_wrong_arch_is_refused() -> None:
    with pytest.raises(CheckpointError, match="kdsr_student_m_x4"):
        load_reference_checkpoint(reference_state_dict("kdsr_student_m_x4"), "lightbsr_student_x4")
    with pytest.raises(CheckpointError, match="setting1"):
        load_reference_checkpoint(reference_state_dict("lightbsr_teacher_x4_setting1"), "lightbsr_teacher_x4_setting2")


def test_wrapped_and_module_prefixed_state_dicts_load() -> None:
    state = reference_state_dict("lightbsr_student_x4")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    model = load_reference_checkpoint(wrapped, "lightbsr_student_x4")
    assert not model.training


# ------------------------------------------------------------------- configs


def test_arch_names_round_trip() -> None:
    for name in known_archs():
        assert ModelConfig.from_arch(name).arch == name


@pytest.mark.parametrize(
    "bad", ["lightbsr_student_x5", "kdsr_student_x4", "lightbsr_student_x4_setting1", "resnet", ""]
)
def test_bad_arch_names(bad: str) -> None:
    with pytest.raises(ConfigError):
        ModelConfig.from_arch(bad)


def test_student_setting_is_metadata() -> None:
    config = ModelConfig.from_arch("lightbsr_student_x4", setting=2)
    assert config.setting == 2 and config.arch == "lightbsr_student_x4"
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lightbsr_restore_in_tiles_is_restore(scale: int) -> None:
    """Stage-wise tiled restoration equals whole-image restoration (float64: any missing context would show)."""
    torch.manual_seed(scale)
    model = LightBSR(scale).double().eval()
    model.groups = model.groups[:2]  # 2 groups of 3 blocks: the same stages, 10× less work
    for group in model.groups:
        group.blocks = group.blocks[:3]
    with torch.no_grad():  # layer scale starts at 1e-6, which would hide a block computed wrongly
        for name, param in model.named_parameters():
            if name.endswith("gamma"):
                param.fill_(0.5)
    lr = torch.rand(2, 3, 19, 30, dtype=torch.float64)
    calls: list[tuple[int, int]] = []
    with torch.inference_mode():
        idr = model.estimate(lr)
        whole = model.restore(lr, idr)
        tiled = model.restore_in_tiles(lr, idr, 8, lambda done, total: calls.append((done, total)))
    assert tiled.shape == whole.shape == (2, 3, 19 * scale, 30 * scale)
    assert whole.std() > 0.02
    assert torch.allclose(tiled, whole, rtol=0, atol=1e-10), (tiled - whole).abs().max()
    stages = 2 * 4 + 2
    assert calls[-1] == (stages * 3 * 4, stages * 3 * 4) and len(calls) == stages * 12
