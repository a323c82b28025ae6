"""lightbsr checkpoints (safetensors + config) and the authors'-layout converter, through the API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import reference_io, reference_state_dict, relative_error
from safetensors.torch import save_file

from lightbsr.checkpoint import (
    CONFIG_KEY,
    convert_reference_file,
    load_checkpoint,
    read_checkpoint,
    read_metadata,
    read_pca_matrix,
    save_checkpoint,
)
from lightbsr.cli import main
from lightbsr.errors import CheckpointError, ConfigError
from lightbsr.files import sha256_file
from lightbsr.models import ModelConfig, build_model


@pytest.fixture(scope="module")
def reference_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ref") / "lightbsr_student_x4.pth"
    torch.save({"state_dict": reference_state_dict("lightbsr_student_x4")}, path)
    return path


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = build_model("kdsr_student_m_x2")
    config = ModelConfig.from_arch("kdsr_student_m_x2", setting=2)
    path = save_checkpoint(tmp_path / "m.safetensors", model, config, metadata={"iterations": "10"})
    loaded, loaded_config = load_checkpoint(path)
    assert loaded_config == config and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    metadata = read_metadata(path)
    assert metadata["iterations"] == "10" and json.loads(metadata[CONFIG_KEY])["arch"] == "kdsr_student_m_x2"
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_fp16_checkpoint_loads_as_float32(tmp_path: Path) -> None:
    model = build_model("lightbsr_student_x4")
    path = save_checkpoint(
        tmp_path / "half.safetensors", model, ModelConfig.from_arch("lightbsr_student_x4"), dtype=torch.float16
    )
    state, _, _ = read_checkpoint(path)
    assert state["head.weight"].dtype == torch.float16
    loaded, _ = load_checkpoint(path)
    assert loaded.head.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.head.weight, model.head.weight.half().float())


def test_convert_pt_reproduces_reference(tmp_path: Path, reference_pt: Path) -> None:
    out = tmp_path / "student.safetensors"
    config = convert_reference_file(reference_pt, out)  # arch detected
    assert config.arch == "lightbsr_student_x4"
    assert read_metadata(out)["lightbsr.source_sha256"] == sha256_file(reference_pt)
    model, _ = load_checkpoint(out)
    io = reference_io("lightbsr_student_x4")
    with torch.no_grad():
        assert relative_error(model(io["in.lr"]), io["out.sr"]) <= 1e-4


@pytest.fixture(scope="module")
def authors_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """An authors'-layout LightBSR teacher and the PCA_matrix.mat of its run (p: 441×15, orthonormal columns)."""
    scipy_io = pytest.importorskip("scipy.io", reason="scipy (dev extra) writes the test's MATLAB files")
    folder = tmp_path_factory.mktemp("authors")
    src = folder / "model_best.pt"
    torch.save({"state_dict": reference_state_dict("lightbsr_teacher_x4_setting1")}, src)
    p, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(441, 15)))
    scipy_io.savemat(folder / "PCA_matrix.mat", {"p": p}, do_compression=True)
    return src, folder / "PCA_matrix.mat", p


def test_convert_teacher_stores_the_basis_of_its_run(tmp_path: Path, authors_teacher: tuple) -> None:
    src, mat, p = authors_teacher
    out = tmp_path / "ours.safetensors"
    convert_reference_file(src, out, pca=mat)
    state, config, _ = read_checkpoint(out)
    assert config.arch == "lightbsr_teacher_x4_setting1"
    assert torch.equal(state["pca_basis"], torch.from_numpy(p.T.copy()).float())
    teacher, _ = load_checkpoint(out)
    kernel = torch.rand(2, 21, 21)
    torch.testing.assert_close(teacher.drp(kernel), kernel.flatten(1) @ torch.from_numpy(p).float())


def test_convert_teacher_without_its_basis_is_refused(tmp_path: Path, authors_teacher: tuple) -> None:
    src, _, _ = authors_teacher
    out = tmp_path / "ours.safetensors"
    with pytest.raises(CheckpointError, match=r"--pca PCA_matrix\.mat"):
        convert_reference_file(src, out)
    assert not out.exists()


def test_cli_convert_teacher_needs_pca(tmp_path: Path, authors_teacher: tuple) -> None:
    src, mat, _ = authors_teacher
    out = tmp_path / "ours.safetensors"
    command = [sys.executable, "-m", "lightbsr", "convert", str(src), "-o", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "--pca PCA_matrix.mat" in result.stderr
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []
    result = subprocess.run([*command, "--pca", str(mat)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert read_checkpoint(out)[1].arch == "lightbsr_teacher_x4_setting1"


def test_pca_basis_is_for_teachers_only(tmp_path: Path, reference_pt: Path, authors_teacher: tuple) -> None:
    _, mat, _ = authors_teacher
    with pytest.raises(CheckpointError, match="for LightBSR teachers"):
        convert_reference_file(reference_pt, tmp_path / "x.safetensors", pca=mat)
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("compressed", [False, True])
def test_read_pca_matrix_of_both_mat_layouts(tmp_path: Path, compressed: bool) -> None:
    scipy_io = pytest.importorskip("scipy.io", reason="scipy (dev extra) writes the test's MATLAB files")
    p = np.arange(441 * 15, dtype=np.float64).reshape(441, 15) / 1000.0
    scipy_io.savemat(tmp_path / "p.mat", {"name": "x", "p": p, "q": np.eye(2)}, do_compression=compressed)
    assert torch.equal(read_pca_matrix(tmp_path / "p.mat"), torch.from_numpy(p.T.copy()).float())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"p": np.zeros((15, 441))}, "441×15"),
        ({"q": np.zeros((441, 15))}, "no matrix named 'p'"),
        ({"p": np.full((441, 15), np.nan)}, "NaN"),
        ({"p": np.zeros((441, 15)) + 1j}, "complex"),
        ({"p": "text"}, "char array"),
        ({"p": {"a": 1}}, "struct"),
    ],
)
def test_bad_pca_matrix_is_one_clear_error(tmp_path: Path, content: dict, message: str) -> None:
    scipy_io = pytest.importorskip("scipy.io", reason="scipy (dev extra) writes the test's MATLAB files")
    scipy_io.savemat(tmp_path / "p.mat", content)
    with pytest.raises(ConfigError, match=message):
        read_pca_matrix(tmp_path / "p.mat")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "too short"),
        (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: HDF5 schema 1.00 .".ljust(128, b" "), "v7.3"),
        (b"\x00" * 200, "not a MATLAB Level 5"),
    ],
)
def test_unreadable_mat_file_is_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "p.mat").write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        read_pca_matrix(tmp_path / "p.mat")


def test_truncated_mat_file_is_refused(tmp_path: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io", reason="scipy (dev extra) writes the test's MATLAB files")
    scipy_io.savemat(tmp_path / "p.mat", {"p": np.ones((441, 15))})
    data = (tmp_path / "p.mat").read_bytes()
    (tmp_path / "p.mat").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="truncated"):
        read_pca_matrix(tmp_path / "p.mat")


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": reference_state_dict("kdsr_student_m_x4"), "hook": print}, path)
    with pytest.raises(CheckpointError, match="weights-only") as caught:
        convert_reference_file(path, tmp_path / "out.safetensors")
    assert "weights_only=False" not in str(caught.value)  # never advise running the file's code
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x00" * 64])
def test_corrupt_checkpoint_is_a_checkpoint_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        load_checkpoint(path)


def test_reference_safetensors_is_not_a_lightbsr_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ref.safetensors"
    save_file(reference_state_dict("kdsr_student_m_x4"), str(path))
    with pytest.raises(CheckpointError, match="lightbsr convert"):
        load_checkpoint(path)


def test_wrong_model_weights_in_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "lying.safetensors"
    save_checkpoint(path, build_model("lightbsr_student_x3"), ModelConfig.from_arch("lightbsr_student_x3"))
    state, _, _ = read_checkpoint(path)
    save_file(
        state, str(path), metadata={CONFIG_KEY: json.dumps(ModelConfig.from_arch("lightbsr_student_x2").to_dict())}
    )
    with pytest.raises(CheckpointError, match=r"shape mismatch.*upsampler\.0\.weight"):
        load_checkpoint(path)
    state.pop("upsampler.0.bias")
    save_file(
        state, str(path), metadata={CONFIG_KEY: json.dumps(ModelConfig.from_arch("lightbsr_student_x3").to_dict())}
    )
    with pytest.raises(CheckpointError, match=r"missing key.*upsampler\.0\.bias"):
        load_checkpoint(path)


# ------------------------------------------------------------------- CLI


def test_cli_convert(tmp_path: Path, reference_pt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.safetensors"
    assert main(["convert", str(reference_pt), "-o", str(out), "--arch", "lightbsr_student_x4", "--setting", "1"]) == 0
    assert "lightbsr_student_x4" in capsys.readouterr().out
    assert read_checkpoint(out)[1].setting == 1


@pytest.mark.parametrize(
    ("arch", "message"),
    [("kdsr_student_m_x4", "holds a lightbsr_student_x4 model"), ("nonsense_x4", "unknown architecture")],
)
def test_cli_convert_wrong_arch(tmp_path: Path, reference_pt: Path, arch: str, message: str) -> None:
    out = tmp_path / "x.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "lightbsr", "convert", str(reference_pt), "-o", str(out), "--arch", arch],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_convert_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
