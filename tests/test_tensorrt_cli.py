"""`lightbsr build`: help, one-line failures (no TensorRT, bad flags, bad ONNX), ONNX inspection, stub fixing."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import tensorrt_onnx

from lightbsr.cli import build_parser, main
from lightbsr.tensorrt.loader import installed_version
from lightbsr.tensorrt.onnx_info import read_onnx_info

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tensorrt_onnx.onnx_graphs(tmp_path_factory)


def fails(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    """Run ``lightbsr ARGS``, expect exit 2 and exactly one line on stderr; return it."""
    code = main([*map(str, args)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("lightbsr: error: "), err
    return err


def test_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--output",
        "--fp16",
        "--int8",
        "--strongly-typed",
        "--no-strongly-typed",
        "--min-shape",
        "--opt-shape",
        "--max-shape",
        "--workspace",
        "--timing-cache",
        "--builder-optimization-level",
        "--version-compatible",
        "--hardware-compatibility",
        "--print-trtexec",
        "--trt-version",
        "--json",
    ):
        assert flag in text
    assert "TensorRT 11" in text and "(default: None)" not in text


def test_without_tensorrt_build_says_so_in_one_line(
    graphs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt → ImportError, even where it is installed
    err = fails(capsys, "build", graphs["lightbsr_full"], "-o", tmp_path / "m.engine")
    assert "TensorRT is not installed (pip install lightbsr[trt]" in err
    assert "use --print-trtexec to get the trtexec command" in err
    assert not list(tmp_path.iterdir())


def test_stubs_alone_do_not_count_as_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """tensorrt-stubs installs a bare `tensorrt` folder that imports as an empty namespace package."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    assert installed_version() is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-shape", "1x3x64"], None),  # rank checked by BuildSettings
        (["--min-shape", "1x3x8x8", "--opt-shape", "1x3x8x8"], "once per profile"),
        (["--min-shape", "idr:1x64", "--opt-shape", "1x3x8x8", "--max-shape", "1x3x8x8"], "other inputs are derived"),
        (["--min-shape", "1x3x64x64", "--opt-shape", "1x3x32x32", "--max-shape", "1x3x128x128"], "min ≤ opt ≤ max"),
        (["--int8"], "lightbsr quantize --int8"),
        (["--fp16", "--trt-version", "11.1"], "lightbsr quantize --fp16"),
        (["--hardware-compatibility", "same-cc", "--trt-version", "10.3"], "10.9"),
    ],
)
def test_bad_flags_fail_in_one_line(
    graphs: dict[str, Path], capsys: pytest.CaptureFixture[str], args: list[str], message: str | None
) -> None:
    err = fails(capsys, "build", graphs["lightbsr_full"], "--print-trtexec", *args)
    assert message is None or message in err


def test_bad_onnx_files_fail_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "no such ONNX file" in fails(capsys, "build", tmp_path / "missing.onnx", "--print-trtexec")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not an onnx model")
    assert "not a readable ONNX model" in fails(capsys, "build", junk, "--print-trtexec")


def test_estimator_graph_and_opt_only_profile(graphs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(graphs["lightbsr_estimator"]), "--print-trtexec", "--opt-shape", "2x3x48x64"]) == 0
    out = capsys.readouterr().out
    for flag in ("--minShapes", "--optShapes", "--maxShapes"):
        assert f"{flag}=lr:2x3x48x64 " in out


def test_onnx_inspection(graphs: dict[str, Path]) -> None:
    restorer = read_onnx_info(graphs["lightbsr_restorer"])
    assert restorer.inputs == {
        "lr": (None, 3, None, None),
        "idr_channel": (None, 48),
        "idr_spatial": (None, 8, None, None),
    }
    assert restorer.metadata["lightbsr.graph"] == "restorer" and restorer.scale == 4
    assert [read_onnx_info(graphs[g]).precision for g in ("lightbsr_full", "fp16", "qdq")] == ["fp32", "fp16", "int8"]
    assert read_onnx_info(graphs["qdq_uint8"]).uint8_qdq and not read_onnx_info(graphs["qdq"]).uint8_qdq
    assert len(restorer.sha256) == 64


def test_build_is_registered_on_the_main_parser() -> None:
    args = build_parser().parse_args(["build", "m.onnx", "--fp16"])
    assert args.fp16 and args.onnx == Path("m.onnx")


def _fixer() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("fix_tensorrt_stubs", ROOT / ".ci" / "fix_tensorrt_stubs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stub_fixes() -> None:
    fix = _fixer().fix_stub
    assert fix("    def f(self, in: list[int], out: list[int]) -> None:") == (
        "    def f(self, in_: list[int], out: list[int]) -> None:"
    )
    assert fix("    def g(self, a: W = None, b: W = None, axis: int) -> L:") == (
        "    def g(self, a: W = None, b: W = None, axis: int = ...) -> L:"
    )
    untouched = "    def h(self, index: int, *args: typing.Any, inputs: dict[str, int] = {}) -> None:"
    assert fix(untouched) == untouched


def test_installed_stubs_parse_once_fixed() -> None:
    import ast

    spec = importlib.util.find_spec("tensorrt_bindings")
    stubs = [Path(p) / "tensorrt.pyi" for p in (spec.submodule_search_locations or [])] if spec else []
    stubs = [p for p in stubs if p.is_file()]
    if not stubs:
        pytest.skip("needs tensorrt-stubs (pip install --no-deps tensorrt-stubs==10.13.0.35.1)")
    text = stubs[0].read_text()
    with pytest.raises(SyntaxError):
        ast.parse(text)  # as shipped: not valid Python; if this starts to pass, the fixer can go
    ast.parse(_fixer().fix_stub(text))


def test_installed_version_is_the_tensorrt_package_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in tensorrt modules (no TensorRT here): the full module's version, None for the lean runtime only."""
    import types

    full = types.ModuleType("tensorrt")
    full.__version__ = "10.13.0.35"  # type: ignore[attr-defined]
    full.Builder = object  # type: ignore[attr-defined]
    full.Runtime = object  # type: ignore[attr-defined]
    full.Logger = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", full)
    assert installed_version() == "10.13.0.35"
    del full.Builder  # a runtime that cannot build engines has no version to build with
    assert installed_version() is None
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installed: import fails
    assert installed_version() is None


def test_print_trtexec_without_bindings_does_not_promise_same_cc(
    graphs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without bindings the version is unknown: JetPack 6's trtexec (10.3) rejects sameComputeCapability."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    args = ("build", graphs["lightbsr_full"], "-o", tmp_path / "m.engine", "--print-trtexec")
    err = fails(capsys, *args, "--hardware-compatibility", "same-cc")
    assert "--trt-version" in err
    assert main([str(a) for a in (*args, "--hardware-compatibility", "same-cc", "--trt-version", "10.9")]) == 0
    assert "--hardwareCompatibilityLevel=sameComputeCapability" in capsys.readouterr().out
