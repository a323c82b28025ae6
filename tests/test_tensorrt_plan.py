"""The build decision: TensorRT version × flags × ONNX precision → network/builder flags or a one-line refusal."""

from __future__ import annotations

import itertools

import pytest

from lightbsr.errors import ConfigError
from lightbsr.tensorrt.engine import BuildSettings
from lightbsr.tensorrt.plan import plan_build

PRECISION_FLAGS = {"FP16", "INT8"}


def refusal(version: str, precision: str, **settings: object) -> str:
    with pytest.raises(ConfigError) as info:
        plan_build(version, BuildSettings(**settings), precision)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_trt10_fp32_onnx_builds_weakly_typed() -> None:
    plan = plan_build("10.13.0.35", BuildSettings(), "fp32")
    assert (plan.strongly_typed, plan.network_flags, plan.builder_flags, plan.precision) == (False, (), (), "fp32")
    plan = plan_build("10.13.0.35", BuildSettings(fp16=True), "fp32")
    assert (plan.strongly_typed, plan.builder_flags, plan.precision) == (False, ("FP16",), "fp16")


def test_trt10_converted_onnx_builds_strongly_typed_and_ignores_redundant_flags() -> None:
    plan = plan_build("10.3.0", BuildSettings(fp16=True), "fp16")
    assert plan.strongly_typed and plan.network_flags == ("STRONGLY_TYPED",) and plan.builder_flags == ()
    assert plan.precision == "fp16" and any("--fp16 ignored" in note for note in plan.notes)
    plan = plan_build("10.3.0", BuildSettings(int8=True), "int8")
    assert plan.network_flags == ("STRONGLY_TYPED",) and plan.builder_flags == () and plan.precision == "int8"
    assert any("--int8 ignored" in note for note in plan.notes)


def test_trt10_qdq_with_fp16_goes_weakly_typed_with_both_flags() -> None:
    plan = plan_build("10.13", BuildSettings(fp16=True), "int8")
    assert not plan.strongly_typed and set(plan.builder_flags) == {"FP16", "INT8"} and plan.precision == "int8"
    assert "--strongly-typed" in refusal("10.13", "int8", fp16=True, strongly_typed=True)


def test_trt10_no_strongly_typed_keeps_the_onnx_precision_usable() -> None:
    plan = plan_build("10.13", BuildSettings(strongly_typed=False), "fp16")
    assert not plan.strongly_typed and plan.builder_flags == ("FP16",) and plan.notes
    plan = plan_build("10.13", BuildSettings(strongly_typed=False), "int8")
    assert plan.builder_flags == ("INT8",)


def test_int8_needs_qdq_on_every_version() -> None:
    for version, precision in itertools.product(("10.3", "11.4"), ("fp32", "fp16")):
        assert "lightbsr quantize --int8" in refusal(version, precision, int8=True)


def test_trt11_is_strongly_typed_only() -> None:
    plan = plan_build("11.4.0.106", BuildSettings(), "fp32")
    assert plan.strongly_typed and plan.network_flags == () and plan.builder_flags == ()
    assert "lightbsr quantize --fp16" in refusal("11.4.0.106", "fp32", fp16=True)
    assert "--no-strongly-typed" in refusal("11.0", "fp16", strongly_typed=False)
    assert "Q/DQ" in refusal("11.0", "int8", fp16=True)
    plan = plan_build("11.0", BuildSettings(fp16=True), "fp16")
    assert plan.precision == "fp16" and plan.notes


def test_strongly_typed_fp16_request_on_fp32_onnx_is_refused_on_trt10() -> None:
    assert "lightbsr quantize --fp16" in refusal("10.13", "fp32", fp16=True, strongly_typed=True)


def test_same_compute_capability_needs_trt_10_9() -> None:
    assert "10.9" in refusal("10.8.0.43", "fp32", hardware_compatibility="same-cc")
    for version in ("10.9.0.34", "11", "11.4"):  # a bare "10" may be 10.3 (see below)
        assert plan_build(version, BuildSettings(hardware_compatibility="same-cc"), "fp32").hardware_level == (
            "SAME_COMPUTE_CAPABILITY"
        )
    assert plan_build("10.3", BuildSettings(hardware_compatibility="ampere+"), "fp32").hardware_level == "AMPERE_PLUS"
    assert plan_build("10.3", BuildSettings(), "fp32").hardware_level == "NONE"


def test_version_compatible_flag_and_unsupported_inputs() -> None:
    for version in ("10.3", "11.4"):
        plan = plan_build(version, BuildSettings(version_compatible=True), "fp16")
        assert "VERSION_COMPATIBLE" in plan.builder_flags
    assert "TensorRT 10 or 11" in refusal("8.6.1", "fp32")
    with pytest.raises(ConfigError, match="symmetric int8"):
        plan_build("10.13", BuildSettings(), "int8", uint8_qdq=True)


SETTINGS = [
    BuildSettings(fp16=fp16, int8=int8, strongly_typed=typed, version_compatible=vc)
    for fp16, int8, typed, vc in itertools.product((False, True), (False, True), (None, False, True), (False, True))
]


@pytest.mark.parametrize("version", ["10.0.1", "10.13.3.9", "11.0.0.114", "11.4.0.106"])
def test_every_combination_is_either_refused_or_consistent(version: str) -> None:
    """No plan mixes strong typing with precision flags; TensorRT 11 never gets a flag it removed."""
    for settings, precision in itertools.product(SETTINGS, ("fp32", "fp16", "int8")):
        try:
            plan = plan_build(version, settings, precision)
        except ConfigError as err:
            assert "\n" not in str(err)
            continue
        flags = set(plan.builder_flags)
        assert flags <= PRECISION_FLAGS | {"VERSION_COMPATIBLE"}
        assert ("VERSION_COMPATIBLE" in flags) == settings.version_compatible
        if plan.strongly_typed:
            assert not flags & PRECISION_FLAGS and plan.precision == precision
        if version.startswith("11"):
            assert plan.strongly_typed and plan.network_flags == () and not flags & PRECISION_FLAGS
        else:
            assert plan.network_flags == (("STRONGLY_TYPED",) if plan.strongly_typed else ())
        if settings.fp16 and plan.precision == "fp32":
            pytest.fail(f"--fp16 silently dropped: {settings} {precision} → {plan}")


def test_a_bare_major_version_is_its_oldest_release() -> None:
    """JetPack 6 ships trtexec 10.3, which has no sameComputeCapability: "10" must not promise it."""
    with pytest.raises(ConfigError, match="--trt-version"):
        plan_build("10", BuildSettings(hardware_compatibility="same-cc"), "fp32")
    assert plan_build("10.9", BuildSettings(hardware_compatibility="same-cc"), "fp32").hardware_level == (
        "SAME_COMPUTE_CAPABILITY"
    )
    assert plan_build("11", BuildSettings(hardware_compatibility="same-cc"), "fp32").trt_major == 11
