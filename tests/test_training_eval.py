"""``lightbsr eval``: the papers' protocol for bicubic, checkpoints and ONNX files, on the tiny fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from lightbsr.checkpoint import save_checkpoint
from lightbsr.cli import main
from lightbsr.contract import INPUT_LR, META_SCALE, OUTPUT_SR
from lightbsr.evaluation import bicubic_upscale, evaluate
from lightbsr.models import ModelConfig, build_model

IMAGES = Path(__file__).parent / "data" / "images"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """LightBSR's many small ops run erratically with 2 threads on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _eval_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["eval", *args, "--json", "--no-progress", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bicubic_json_is_the_protocol_of_lightbsr_evaluation(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _eval_json(capsys, "bicubic", "--dataset", str(IMAGES), str(IMAGES), "--sigma", "1.2", "2.4", "3.6")
    expected = evaluate(bicubic_upscale(4), IMAGES, sigmas=(1.2, 2.4, 3.6), progress=False).to_dict()["mean"]
    assert doc["schema"] == "lightbsr.eval-summary/1"
    assert (doc["model"], doc["method"], doc["scale"], doc["setting"]) == ("bicubic", "Bicubic", 4, 1)
    assert doc["sigmas"] == [1.2, 2.4, 3.6]
    assert len(doc["datasets"]) == 2
    for entry in doc["datasets"]:
        assert (entry["name"], entry["images"]) == ("images", 3)
        assert entry["mean"] == expected
        assert set(entry["mean"]["2.4"]) == {"psnr", "ssim"}


def test_table_output_has_the_table_3_layout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "bicubic", "--dataset", str(IMAGES), "--sigma", "2.4", "--ssim", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Y-PSNR / SSIM (dB), setting 1, ×4")
    result = evaluate(bicubic_upscale(4), IMAGES, sigmas=(2.4,), progress=False)
    assert lines[-1].startswith("Bicubic") and f"{result.mean_psnr(2.4):.2f}/{result.mean_ssim(2.4):.4f}" in lines[-1]


def test_checkpoint_models_run_in_pytorch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = build_model("lightbsr_student_x4").eval()
    path = save_checkpoint(tmp_path / "student.safetensors", model, ModelConfig("lightbsr", "student", 4, 1))
    doc = _eval_json(capsys, str(path), "--dataset", str(IMAGES), "--sigma", "2.4")
    expected = evaluate(model, IMAGES, sigmas=(2.4,), progress=False).to_dict()["mean"]
    assert doc["datasets"][0]["mean"] == expected and doc["model"] == str(path)
    assert main(["eval", str(path), "--dataset", str(IMAGES), "--scale", "2", "--no-progress"]) == 2
    assert "pass --scale 4" in capsys.readouterr().err


def test_lightbsr_teacher_is_given_the_true_prior(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    teacher = build_model("lightbsr_teacher_x4_setting1").eval()
    path = save_checkpoint(tmp_path / "t.safetensors", teacher, ModelConfig("lightbsr", "teacher", 4, 1))
    doc = _eval_json(capsys, str(path), "--dataset", str(IMAGES), "--sigma", "1.2", "3.6")
    assert doc["method"].endswith("(true DRP)") and list(doc["datasets"][0]["mean"]) == ["1.2", "3.6"]
    kdsr = save_checkpoint(tmp_path / "k.safetensors", build_model("kdsr_teacher_m_x4"), ModelConfig("kdsr", "teacher"))
    assert main(["eval", str(kdsr), "--dataset", str(IMAGES), "--no-progress"]) == 2
    assert "needs the HR image" in capsys.readouterr().err


def _nearest_x4_onnx(path: Path, dtype: int = TensorProto.FLOAT) -> None:
    """A stand-in ×4 model: nearest-neighbour upsampling, input 'lr', output 'sr'."""
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 4.0, 4.0])
    node = helper.make_node(
        "Resize", [INPUT_LR, "", "scales"], [OUTPUT_SR], mode="nearest", coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "nearest_x4",
        [helper.make_tensor_value_info(INPUT_LR, dtype, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info(OUTPUT_SR, dtype, ["n", 3, "H", "W"])],
        initializer=[scales],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {META_SCALE: "4"})
    onnx.save(model, str(path))


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16])
def test_onnx_models_run_in_onnx_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str], dtype: int) -> None:
    path = tmp_path / "nearest.onnx"
    _nearest_x4_onnx(path, dtype)
    doc = _eval_json(capsys, str(path), "--dataset", str(IMAGES), "--sigma", "2.4")

    def nearest(lr: torch.Tensor) -> torch.Tensor:
        if dtype == TensorProto.FLOAT16:
            lr = torch.from_numpy(lr.numpy().astype(np.float16).astype(np.float32))
        return lr.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)

    expected = evaluate(nearest, IMAGES, sigmas=(2.4,), progress=False).to_dict()["mean"]
    assert doc["datasets"][0]["mean"] == expected


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("missing.safetensors", [], "no such model file"),
        ("default", ["--setting", "2"], "no bundled setting-2 model"),
        ("bicubic", ["--setting", "2"], "setting 2"),
        ("bicubic", ["--sigma", "-1"], "sigma"),
        ("bicubic", ["--bf16"], "--bf16 is for --backend openvino"),
        ("default", ["--backend", "openvino"], "--backend openvino runs ONNX files; default is not one"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, extra: list[str], message: str
) -> None:
    assert main(["eval", model, "--dataset", str(IMAGES), *extra, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_bad_files_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    assert main(["eval", str(tmp_path / "broken.onnx"), "--dataset", str(IMAGES), "--no-progress"]) == 2
    assert main(["eval", "bicubic", "--dataset", str(tmp_path / "none"), "--no-progress"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and "not a loadable ONNX model" in errors[0] and "does not exist" in errors[1]
