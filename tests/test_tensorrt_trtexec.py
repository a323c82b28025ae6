"""`lightbsr build --print-trtexec`: a valid trtexec line that round-trips to the same settings."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import tensorrt_onnx

from lightbsr.cli import main
from lightbsr.errors import ConfigError
from lightbsr.tensorrt.engine import BuildSettings, ShapeRange, derive_profile
from lightbsr.tensorrt.onnx_info import read_onnx_info
from lightbsr.tensorrt.plan import plan_build
from lightbsr.tensorrt.trtexec import parse_trtexec_command, trtexec_command

ISSUE_PROFILE = ["--min-shape", "1x3x64x64", "--opt-shape", "lr:1x3x256x256", "--max-shape", "4x3x512x512"]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tensorrt_onnx.onnx_graphs(tmp_path_factory)


NOTES: list[str] = []  # stderr of the last print_trtexec


def print_trtexec(capsys: pytest.CaptureFixture[str], *args: str | Path) -> list[str]:
    code = main(["build", *map(str, args), "--print-trtexec"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.count("\n") == 1
    NOTES[:] = out.err.splitlines()
    return shlex.split(out.out)


def flags(argv: list[str]) -> dict[str, str]:
    return dict(arg.partition("=")[::2] for arg in argv[1:])


def test_issue_profile_on_the_lightbsr_onnx(graphs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    onnx = graphs["lightbsr_full"]
    argv = print_trtexec(capsys, onnx, "-o", "out dir/model.engine", *ISSUE_PROFILE, "--fp16", "--trt-version", "10.13")
    assert argv[0] == "trtexec"
    assert f"--onnx={onnx}" in argv and "--saveEngine=out dir/model.engine" in argv
    assert "--minShapes=lr:1x3x64x64" in argv
    assert "--optShapes=lr:1x3x256x256" in argv
    assert "--maxShapes=lr:4x3x512x512" in argv
    assert "--fp16" in argv and "--stronglyTyped" not in argv and "--int8" not in argv
    assert "--skipInference" in argv and "--profile=0" not in argv
    assert all(arg.startswith("--") for arg in argv[1:]) and NOTES == []


def test_restorer_graph_gets_derived_idr_shapes(graphs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = flags(print_trtexec(capsys, graphs["lightbsr_restorer"], *ISSUE_PROFILE, "--trt-version", "10.3"))
    assert argv["--minShapes"] == "lr:1x3x64x64,idr_channel:1x48,idr_spatial:1x8x64x64"
    assert argv["--optShapes"] == "lr:1x3x256x256,idr_channel:1x48,idr_spatial:1x8x256x256"
    assert argv["--maxShapes"] == "lr:4x3x512x512,idr_channel:4x48,idr_spatial:4x8x512x512"
    kdsr = flags(print_trtexec(capsys, graphs["kdsr_restorer"], *ISSUE_PROFILE))
    assert kdsr["--maxShapes"] == "lr:4x3x512x512,idr:4x64"
    teacher = flags(print_trtexec(capsys, graphs["kdsr_teacher"], *ISSUE_PROFILE))
    assert teacher["--maxShapes"] == "lr:4x3x512x512,hr:4x3x2048x2048"


def test_every_builder_flag(graphs: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = print_trtexec(
        capsys,
        graphs["lightbsr_full"],
        *ISSUE_PROFILE,
        "--workspace",
        "1024",
        "--timing-cache",
        tmp_path / "timing.cache",
        "--builder-optimization-level",
        "5",
        "--version-compatible",
        "--hardware-compatibility",
        "ampere+",
        "--trt-version",
        "10.13.0.35",
    )
    assert "--memPoolSize=workspace:1024M" in argv
    assert f"--timingCacheFile={tmp_path / 'timing.cache'}" in argv
    assert "--builderOptimizationLevel=5" in argv
    assert "--versionCompatible" in argv
    assert "--hardwareCompatibilityLevel=ampere+" in argv
    same_cc = print_trtexec(
        capsys, graphs["lightbsr_full"], "--hardware-compatibility", "same-cc", "--trt-version", "10.9"
    )
    assert "--hardwareCompatibilityLevel=sameComputeCapability" in same_cc


def test_precision_spelling_per_version(graphs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    qdq10 = print_trtexec(capsys, graphs["qdq"], "--int8", "--trt-version", "10.3")
    assert "--stronglyTyped" in qdq10 and "--int8" not in qdq10
    assert NOTES == [
        "lightbsr: note: --int8 ignored: the network is strongly typed and the Q/DQ ONNX already sets its precision"
    ]
    fp16_10 = print_trtexec(capsys, graphs["fp16"], "--trt-version", "10.13")
    assert "--stronglyTyped" in fp16_10 and "--fp16" not in fp16_10
    qdq_fp16 = print_trtexec(capsys, graphs["qdq"], "--fp16", "--trt-version", "10.13")
    assert {"--fp16", "--int8"} <= set(qdq_fp16) and "--stronglyTyped" not in qdq_fp16
    for name in ("qdq", "fp16", "lightbsr_full"):
        trt11 = print_trtexec(capsys, graphs[name], "--trt-version", "11.4.0.106")
        assert not {"--fp16", "--int8", "--stronglyTyped"} & set(trt11)


def test_multiple_profiles(graphs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = print_trtexec(
        capsys,
        graphs["lightbsr_restorer"],
        *ISSUE_PROFILE,
        *["--min-shape", "1x3x16x16", "--opt-shape", "1x3x32x32", "--max-shape", "1x3x64x64"],
    )
    positions = [argv.index("--profile=0"), argv.index("--profile=1")]
    # trtexec reads a profile's three shape flags right after its --profile flag
    assert [a.split("=")[0] for a in argv[positions[0] + 1 : positions[0] + 4]] == [
        "--minShapes",
        "--optShapes",
        "--maxShapes",
    ]
    assert argv[positions[1] + 1] == "--minShapes=lr:1x3x16x16,idr_channel:1x48,idr_spatial:1x8x16x16"
    assert len(parse_trtexec_command(argv).profiles) == 2


@pytest.mark.parametrize("version", ["10.3.0", "10.13.0.35", "11.4.0.106"])
@pytest.mark.parametrize(
    ("graph", "settings"),
    [
        ("lightbsr_full", BuildSettings(fp16=True, workspace_mib=2048, builder_optimization_level=4)),
        ("lightbsr_restorer", BuildSettings(version_compatible=True, hardware_compatibility="ampere+")),
        ("qdq", BuildSettings(int8=True, hardware_compatibility="same-cc")),
        ("fp16", BuildSettings(profiles=(ShapeRange((1, 3, 8, 8), (2, 3, 64, 64), (8, 3, 128, 128)),) * 2)),
        ("kdsr_teacher", BuildSettings()),
    ],
)
def test_round_trip(graphs: dict[str, Path], graph: str, settings: BuildSettings, version: str) -> None:
    info = read_onnx_info(graphs[graph])
    refused = (version.startswith("11") and settings.fp16) or (
        settings.hardware_compatibility == "same-cc" and version == "10.3.0"
    )
    if refused:
        with pytest.raises(ConfigError):
            plan_build(version, settings, info.precision)
        return
    plan = plan_build(version, settings, info.precision)
    profiles = [derive_profile(lr, info.inputs, info.scale) for lr in settings.profiles]
    argv = trtexec_command(
        graphs[graph],
        "my engine.plan",
        plan,
        profiles,
        version_compatible=settings.version_compatible,
        hardware_compatibility=settings.hardware_compatibility,
        workspace_mib=settings.workspace_mib,
        builder_optimization_level=settings.builder_optimization_level,
        timing_cache="cache dir/timing.cache",
    )
    parsed = parse_trtexec_command(shlex.join(argv))
    assert parsed.onnx == str(graphs[graph]) and parsed.engine == "my engine.plan"
    assert parsed.profiles == profiles
    assert [p["lr"] for p in parsed.profiles] == list(settings.profiles)
    assert parsed.fp16 == ("FP16" in plan.builder_flags) and parsed.int8 == ("INT8" in plan.builder_flags)
    assert parsed.strongly_typed == (plan.strongly_typed and plan.trt_major == 10)
    assert parsed.workspace_mib == settings.workspace_mib
    assert parsed.builder_optimization_level == settings.builder_optimization_level
    assert parsed.version_compatible == settings.version_compatible
    assert parsed.hardware_compatibility == settings.hardware_compatibility
    assert parsed.timing_cache == "cache dir/timing.cache" and parsed.skip_inference


def test_parser_units_and_refusals() -> None:
    assert parse_trtexec_command("trtexec --memPoolSize=workspace:2G").workspace_mib == 2048
    assert parse_trtexec_command("trtexec --memPoolSize=dlaSRAM:1M,workspace:512").workspace_mib == 512
    assert parse_trtexec_command("trtexec --memPoolSize=workspace:0.5M").workspace_mib == 0.5
    with pytest.raises(ConfigError, match="unexpected trtexec argument"):
        parse_trtexec_command("trtexec --onnx=a.onnx --best")
    with pytest.raises(ConfigError, match="needs --minShapes"):
        parse_trtexec_command("trtexec --minShapes=lr:1x3x8x8 --maxShapes=lr:1x3x8x8")


def test_json_output(graphs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(graphs["lightbsr_full"]), "--print-trtexec", "--json", "--trt-version", "11.0"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tensorrt_version"] == "11.0" and data["argv"][0] == "trtexec"
    assert f"--saveEngine={graphs['lightbsr_full'].with_suffix('.engine')}" in data["argv"]
