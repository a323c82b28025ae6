"""ONNX export: reference parity in ONNX Runtime, dynamic shapes, metadata, split graphs, bad inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from export_fixtures import Exported, reference_checkpoint, tiny_lightbsr
from reference import reference_io, reference_state_dict, relative_error
from safetensors.torch import save_file

from lightbsr import contract
from lightbsr.checkpoint import save_checkpoint
from lightbsr.cli import main
from lightbsr.errors import ConfigError, ModelFileError
from lightbsr.export import export_onnx, read_onnx_metadata
from lightbsr.files import sha256_file
from lightbsr.models import REFERENCE_ARCHS, ModelConfig, load_reference_checkpoint
from lightbsr.runtime.onnxruntime_backend import run
from lightbsr.runtime.onnxruntime_backend import session as ort_session

TOLERANCE = 1e-4
SPLIT_TOLERANCE = 1e-5


def _feeds(arch: str, io: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    feeds = {"lr": io["in.lr"].numpy()}
    if "in.drp" in io:  # the reference feeds the spatially constant DRP map; the graph takes the (N, C) vector
        drp = io["in.drp"]
        assert torch.equal(drp, drp[:, :, :1, :1].expand_as(drp))
        feeds["drp"] = drp[:, :, 0, 0].numpy()
    if "in.hr" in io:
        feeds["hr"] = io["in.hr"].numpy()
    return feeds


def _torch_forward(model: torch.nn.Module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(*(torch.from_numpy(v) for v in feeds.values())).numpy()


@pytest.mark.parametrize("arch", REFERENCE_ARCHS)
def test_onnx_runtime_reproduces_reference_outputs(exported: dict[str, Exported], arch: str) -> None:
    io = reference_io(arch)
    (sr,) = run(ort_session(exported[arch].onnx), _feeds(arch, io))
    assert sr.shape == tuple(io["out.sr"].shape)
    assert relative_error(torch.from_numpy(sr), io["out.sr"]) <= TOLERANCE


def _random_feeds(arch: str, model: torch.nn.Module, batch: int, height: int, width: int) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(batch * 1000 + height * 10 + width)
    feeds = {"lr": torch.rand(batch, 3, height, width, generator=g)}
    if arch.startswith("lightbsr_teacher"):
        feeds["drp"] = 0.1 * torch.randn(batch, model.drp_channels, generator=g)
    if arch.startswith("kdsr_teacher"):
        feeds["hr"] = torch.rand(batch, 3, 4 * height, 4 * width, generator=g)
    return {k: v.numpy() for k, v in feeds.items()}


@pytest.mark.parametrize("arch", REFERENCE_ARCHS)
def test_same_graph_runs_at_other_batches_and_odd_sizes(exported: dict[str, Exported], arch: str) -> None:
    # (the reference inputs are 1×3×37×53 and 2×3×29×41); the heavy KDSR teacher runs once
    shapes = [(3, 17, 9)] if arch == "kdsr_teacher_m_x4" else [(2, 24, 20), (3, 17, 9)]
    session = ort_session(exported[arch].onnx)
    for batch, height, width in shapes:
        feeds = _random_feeds(arch, exported[arch].model, batch, height, width)
        (sr,) = run(session, feeds)
        expected = _torch_forward(exported[arch].model, feeds)
        assert sr.shape == expected.shape == (batch, 3, 4 * height, 4 * width)
        assert relative_error(torch.from_numpy(sr), torch.from_numpy(expected)) <= TOLERANCE, (batch, height, width)


@pytest.mark.parametrize("arch", REFERENCE_ARCHS)
def test_graphs_are_valid_dynamic_and_self_contained(exported: dict[str, Exported], arch: str) -> None:
    paths = [exported[arch].onnx, *(contract.split_paths(exported[arch].onnx) if "student" in arch else ())]
    for path in paths:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        assert model.opset_import[0].version == 17
        assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
        assert not list(path.parent.glob("*.partial*"))
        for value in [*model.graph.input, *model.graph.output]:
            dims = value.type.tensor_type.shape.dim
            assert dims[0].dim_param == "batch", value.name
            if len(dims) == 4:
                assert all(d.dim_param for d in (dims[2], dims[3])), value.name
        ops = {node.op_type for node in model.graph.node}
        assert not ops & {"BatchNormalization", "Gelu", "Loop", "If"}, ops  # BN folded, Erf GELU at opset 17


def test_simplified_graph_is_smaller_and_verified(exported: dict[str, Exported]) -> None:
    summary = exported["lightbsr_student_x4"].summary  # simplified, then verified at 2×3×14×11 against PyTorch
    assert summary["simplified"] and summary["nodes_simplified"] < 0.8 * summary["nodes_exported"]
    assert (
        summary["files"]["full"]["nodes"]
        == summary["files"]["estimator"]["nodes"] + summary["files"]["restorer"]["nodes"]
    )


@pytest.mark.parametrize("arch", REFERENCE_ARCHS)
def test_metadata(exported: dict[str, Exported], arch: str) -> None:
    item = exported[arch]
    config = ModelConfig.from_arch(arch)
    graphs = {contract.GRAPH_FULL: item.onnx}
    if "student" in arch:
        estimator, restorer = contract.split_paths(item.onnx)
        graphs.update({contract.GRAPH_ESTIMATOR: estimator, contract.GRAPH_RESTORER: restorer})
    for graph, path in graphs.items():
        meta = read_onnx_metadata(path)
        assert meta[contract.META_ARCH] == arch
        assert meta[contract.META_FAMILY] == config.family
        assert meta[contract.META_SCALE] == "4"
        assert meta[contract.META_SETTING] == ("" if config.setting is None else str(config.setting))
        assert meta[contract.META_GRAPH] == graph
        assert meta[contract.META_PRECISION] == "fp32"
        assert meta[contract.META_SOURCE_SHA256] == sha256_file(item.checkpoint)
        assert meta[contract.META_VERSION]


def test_tensor_names_follow_the_contract(exported: dict[str, Exported]) -> None:
    def names(path: Path) -> tuple[list[str], list[str]]:
        model = onnx.load(str(path), load_external_data=False)
        return [v.name for v in model.graph.input], [v.name for v in model.graph.output]

    assert names(exported["lightbsr_student_x4"].onnx) == (["lr"], ["sr"])
    assert names(exported["lightbsr_teacher_x4_setting2"].onnx) == (["lr", "drp"], ["sr"])
    assert names(exported["kdsr_teacher_m_x4"].onnx) == (["lr", "hr"], ["sr"])
    estimator, restorer = contract.split_paths(exported["lightbsr_student_x4"].onnx)
    assert names(estimator) == (["lr"], ["idr_channel", "idr_spatial"])
    assert names(restorer) == (["lr", "idr_channel", "idr_spatial"], ["sr"])
    estimator, restorer = contract.split_paths(exported["kdsr_student_m_x4"].onnx)
    assert names(estimator) == (["lr"], ["idr"]) and names(restorer) == (["lr", "idr"], ["sr"])


@pytest.mark.parametrize("arch", ["lightbsr_student_x4", "kdsr_student_m_x4"])
def test_split_graphs_compose_to_the_full_graph(exported: dict[str, Exported], arch: str) -> None:
    item = exported[arch]
    estimator, restorer = (ort_session(p) for p in contract.split_paths(item.onnx))
    feeds = _random_feeds(arch, item.model, 2, 23, 18)
    (full,) = run(ort_session(item.onnx), feeds)
    idr_names = contract.idr_names(ModelConfig.from_arch(arch).family)
    idr = run(estimator, feeds)
    assert [i.shape for i in idr] == ([(2, 48), (2, 8, 23, 18)] if arch.startswith("lightbsr") else [(2, 64)])
    (composed,) = run(restorer, {**feeds, **dict(zip(idr_names, idr, strict=True))})
    assert relative_error(torch.from_numpy(composed), torch.from_numpy(full)) <= SPLIT_TOLERANCE
    # the restorer really uses the IDR it is given: another image's IDR gives PyTorch's restore(lr, that IDR)
    other = run(estimator, _random_feeds(arch, item.model, 2, 11, 7))
    if arch.startswith("lightbsr"):
        other[1] = idr[1] * 0.5  # the spatial IDR has the image's size
    (restored,) = run(restorer, {**feeds, **dict(zip(idr_names, other, strict=True))})
    with torch.no_grad():
        torch_idr = tuple(torch.from_numpy(i) for i in other)
        expected = item.model.restore(torch.from_numpy(feeds["lr"]), torch_idr if len(torch_idr) > 1 else torch_idr[0])
    assert relative_error(torch.from_numpy(restored), expected) <= TOLERANCE
    assert np.abs(restored - full).max() > 1e-3


def test_export_summary_reports_verification(exported: dict[str, Exported]) -> None:
    summary = exported["lightbsr_student_x4"].summary  # exported through the CLI, verification on
    assert summary["verification"]["full_vs_pytorch"] <= TOLERANCE
    assert summary["verification"]["split_vs_full"] <= SPLIT_TOLERANCE
    assert set(summary["files"]) == {"full", "estimator", "restorer"}
    assert all(f["bytes"] > 0 for f in summary["files"].values())


def test_export_without_split_removes_stale_split_files(tmp_path: Path) -> None:
    config = ModelConfig.from_arch("lightbsr_student_x4")
    path = tmp_path / "m.onnx"
    export_onnx(tiny_lightbsr(), path, config=config, split=True, simplify=False, verify=False)
    assert all(p.exists() for p in contract.split_paths(path))
    export_onnx(tiny_lightbsr(1), path, config=config, simplify=False, verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_failed_verification_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightbsr.export import onnx_export

    monkeypatch.setattr(onnx_export, "FULL_TOLERANCE", -1.0)  # any difference fails
    with pytest.raises(ModelFileError, match="differs from PyTorch"):
        export_onnx(
            tiny_lightbsr(), tmp_path / "m.onnx", config=ModelConfig.from_arch("lightbsr_student_x4"), split=True
        )
    assert list(tmp_path.iterdir()) == []


def test_bad_options(tmp_path: Path) -> None:
    config = ModelConfig.from_arch("lightbsr_student_x4")
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(tiny_lightbsr(), tmp_path / "m.onnx", config=config, opset=13)
    with pytest.raises(ConfigError, match=r"\.onnx"):
        export_onnx(tiny_lightbsr(), tmp_path / "m.bin", config=config)
    with pytest.raises(ConfigError, match="ModelConfig"):
        export_onnx(tiny_lightbsr(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The real console entry point, in a subprocess (exit status, stderr)."""
    return subprocess.run([sys.executable, "-m", "lightbsr", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    # a lightbsr config over KDSR weights: a checkpoint of the wrong architecture
    kdsr = load_reference_checkpoint(reference_state_dict("kdsr_student_m_x4"), "kdsr_student_m_x4")
    wrong = save_checkpoint(folder / "wrong_arch.safetensors", kdsr, ModelConfig.from_arch("lightbsr_student_x4"))
    corrupt = folder / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + bytes(64))
    authors = folder / "authors.safetensors"
    save_file({k: v.contiguous() for k, v in reference_state_dict("lightbsr_student_x4").items()}, str(authors))
    onnx_file = folder / "model.onnx"
    onnx_file.write_bytes(b"not really onnx")
    return {
        "wrong_arch": wrong,
        "corrupt": corrupt,
        "authors": authors,
        "onnx": onnx_file,
        "missing": folder / "missing.safetensors",
    }


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("wrong_arch", "missing key(s)"),
        ("corrupt", "not a readable safetensors file"),
        ("authors", "lightbsr convert"),
        ("onnx", "an ONNX model, not a lightbsr checkpoint"),
        ("missing", "no such file"),
    ],
)
def test_export_bad_checkpoint_is_one_line_exit_2_no_file(
    bad_checkpoints: dict[str, Path], kind: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "model.onnx"
    assert main(["export", str(bad_checkpoints[kind]), "-o", str(out), "--split"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lightbsr: error:"), err
    assert message in err and bad_checkpoints[kind].name in err, err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_console_script_bad_checkpoint(bad_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    result = _cli("export", str(bad_checkpoints["wrong_arch"]), "-o", str(tmp_path / "m.onnx"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and "wrong_arch.safetensors" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_arch_expectation(tmp_path: Path) -> None:
    from lightbsr.errors import CheckpointError

    path, _ = reference_checkpoint(tmp_path, "lightbsr_student_x4")
    with pytest.raises(CheckpointError, match="not kdsr_student_m_x4"):
        export_onnx(path, tmp_path / "m.onnx", config=ModelConfig.from_arch("kdsr_student_m_x4"))
    assert not (tmp_path / "m.onnx").exists()
