"""FP16 mixed precision and INT8 Q/DQ conversion of exported models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from export_fixtures import Exported
from onnx import TensorProto, numpy_helper
from reference import relative_error

from lightbsr import contract
from lightbsr.errors import ConfigError, ModelFileError
from lightbsr.export import calibration_crops, quantize_fp16, quantize_int8, read_onnx_metadata
from lightbsr.export.precision import FP16_KEEP_FP32_OPS, boundary_nodes
from lightbsr.runtime.onnxruntime_backend import run
from lightbsr.runtime.onnxruntime_backend import session as ort_session

IMAGES = Path(__file__).parent / "data" / "images"


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    types = {v.name: v.type.tensor_type.elem_type for v in values}
    types.update({init.name: init.data_type for init in inferred.graph.initializer})
    return types


@pytest.fixture(scope="module")
def fp16(exported: dict[str, Exported], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Exported]:
    item = exported["lightbsr_student_x4"]
    out = tmp_path_factory.mktemp("fp16") / "student.fp16.onnx"
    quantize_fp16(item.onnx, out)
    return out, item


def test_fp16_keeps_sensitive_ops_and_io_in_fp32(fp16: tuple[Path, Exported]) -> None:
    path, _ = fp16
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    types = _types(model)
    kept = [node for node in model.graph.node if node.op_type in FP16_KEEP_FP32_OPS]
    assert {n.op_type for n in kept} == {"LayerNormalization", "ReduceMean", "Sigmoid"}
    for node in kept:
        assert all(types[name] == TensorProto.FLOAT for name in node.input if name), node.name
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert all(types[node.input[1]] == TensorProto.FLOAT16 for node in convs)
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in [*model.graph.input, *model.graph.output])
    assert read_onnx_metadata(path)[contract.META_PRECISION] == "fp16"
    assert path.stat().st_size < 0.6 * fp16[1].onnx.stat().st_size


def test_fp16_converts_the_split_graphs_too(fp16: tuple[Path, Exported]) -> None:
    for graph, sibling in zip(("estimator", "restorer"), contract.split_paths(fp16[0]), strict=True):
        meta = read_onnx_metadata(sibling)
        assert (meta[contract.META_GRAPH], meta[contract.META_PRECISION]) == (graph, "fp16")
        model = onnx.load(str(sibling))
        assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in [*model.graph.input, *model.graph.output])


def test_fp16_runs_in_onnx_runtime_cpu_close_to_fp32(fp16: tuple[Path, Exported]) -> None:
    path, item = fp16
    lr = np.random.default_rng(0).random((2, 3, 19, 14), dtype=np.float32)
    (half,) = run(ort_session(path), {"lr": lr})
    (full,) = run(ort_session(item.onnx), {"lr": lr})
    assert half.dtype == np.float32 and np.isfinite(half).all()
    error = relative_error(torch.from_numpy(half), torch.from_numpy(full))
    assert 0 < error <= 1e-2  # FP16 rounding shows, but stays small


@pytest.fixture(scope="module")
def int8(tiny_export: tuple[Path, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory) -> dict:
    from lightbsr.cli import main

    src, _ = tiny_export
    out = tmp_path_factory.mktemp("int8") / "tiny.int8.onnx"
    import contextlib
    import io

    text = io.StringIO()
    args = ["quantize", str(src), "--int8", "--calib", str(IMAGES), "--calib-count", "3", "--calib-size", "12"]
    with contextlib.redirect_stdout(text):
        assert main([*args, "-o", str(out), "--json"]) == 0
    return {"src": src, "out": out, "summary": json.loads(text.getvalue())}


def test_int8_has_per_channel_symmetric_qdq(int8: dict) -> None:
    model = onnx.load(str(int8["out"]))
    onnx.checker.check_model(model, full_check=True)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    inits = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    per_channel = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        weight = producers.get(node.input[1])
        if weight is None or weight.op_type != "DequantizeLinear":
            continue
        assert inits[weight.input[0]].data_type == TensorProto.INT8
        scale = numpy_helper.to_array(inits[weight.input[1]])
        zero = numpy_helper.to_array(inits[weight.input[2]])
        assert not zero.any()  # symmetric
        if scale.size > 1:
            per_channel += 1
    assert per_channel > 10
    for q in (n for n in model.graph.node if n.op_type == "QuantizeLinear"):  # activations: signed, symmetric
        zero = inits[q.input[2]]
        assert zero.data_type == TensorProto.INT8 and not numpy_helper.to_array(zero).any()


def test_int8_keeps_first_and_last_layers_and_biases_in_fp32(int8: dict) -> None:
    model = onnx.load(str(int8["out"]))
    excluded = int8["summary"]["details"]["excluded_nodes"]
    assert {"/head/Conv", "/tail/Conv", "/estimator/layers/layers.0/conv/Conv"} <= set(excluded)
    assert excluded == boundary_nodes(onnx.load(str(int8["src"])))
    producers = {out: node for node in model.graph.node for out in node.output}
    by_name = {node.name: node for node in model.graph.node}
    for name in excluded:
        assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in by_name[name].input)
    for conv in (n for n in model.graph.node if n.op_type == "Conv" and len(n.input) == 3):
        assert conv.input[2] not in producers  # bias: an FP32 initializer, no DequantizeLinear


def test_int8_runs_in_onnx_runtime_cpu_and_split_graphs_compose(int8: dict) -> None:
    out = int8["out"]
    meta = read_onnx_metadata(out)
    assert meta[contract.META_PRECISION] == "int8" and json.loads(meta["lightbsr.int8"])["count"] == 3
    lr = np.random.default_rng(1).random((2, 3, 15, 10), dtype=np.float32)
    (q,) = run(ort_session(out), {"lr": lr})
    (f,) = run(ort_session(int8["src"]), {"lr": lr})
    assert q.shape == f.shape and np.isfinite(q).all()
    # random weights say nothing of INT8 accuracy (test_int8_drop_on_trained_weights judges that): only that
    # the graph really computes in INT8, so differs from FP32
    assert relative_error(torch.from_numpy(q), torch.from_numpy(f)) > 0
    estimator, restorer = contract.split_paths(out)
    assert read_onnx_metadata(restorer)[contract.META_GRAPH] == "restorer"
    idr = run(ort_session(estimator), {"lr": lr})
    (composed,) = run(ort_session(restorer), {"lr": lr, "idr_channel": idr[0], "idr_spatial": idr[1]})
    assert relative_error(torch.from_numpy(composed), torch.from_numpy(q)) <= 1e-5
    restorer_model = onnx.load(str(restorer), load_external_data=False)
    dims = [d.dim_param for d in restorer_model.graph.input[2].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]


@pytest.fixture(scope="module")
def int8_cpu(tiny_export: tuple[Path, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory) -> dict:
    import contextlib
    import io

    from lightbsr.cli import main

    src, _ = tiny_export
    out = tmp_path_factory.mktemp("int8cpu") / "tiny.int8-cpu.onnx"
    text = io.StringIO()
    args = ["quantize", str(src), "--int8", "--target", "cpu", "--calib", str(IMAGES), "--calib-count", "3"]
    with contextlib.redirect_stdout(text):
        assert main([*args, "--calib-size", "12", "-o", str(out), "--json"]) == 0
    return {"src": src, "out": out, "summary": json.loads(text.getvalue())}


def test_int8_cpu_target_is_uint8_asymmetric_and_fuses_into_integer_kernels(int8_cpu: dict, int8: dict) -> None:
    from lightbsr.export.precision import depthwise_nodes, fused_int8_ops

    model = onnx.load(str(int8_cpu["out"]))
    onnx.checker.check_model(model, full_check=True)
    assert read_onnx_metadata(int8_cpu["out"])[contract.META_INT8_TARGET] == "cpu"
    assert read_onnx_metadata(int8["out"])[contract.META_INT8_TARGET] == "tensorrt"
    inits = {init.name: init for init in model.graph.initializer}
    zeros = [inits[q.input[2]] for q in model.graph.node if q.op_type == "QuantizeLinear"]
    assert zeros and all(z.data_type == TensorProto.UINT8 for z in zeros)  # activations: unsigned
    assert any(numpy_helper.to_array(z).any() for z in zeros)  # asymmetric: zero points where the range needs them
    producers = {out: node for node in model.graph.node for out in node.output}
    by_name = {node.name: node for node in model.graph.node}
    depthwise = depthwise_nodes(onnx.load(str(int8_cpu["src"])))
    assert depthwise and all(by_name[n].input[0] not in producers or producers[by_name[n].input[0]].op_type
                             != "DequantizeLinear" for n in depthwise)  # fmt: skip
    kernels = fused_int8_ops(int8_cpu["out"])
    assert kernels.get("QLinearConv", 0) > 0 and kernels.get("QLinearMatMul", 0) > 0
    assert next(iter(kernels)).startswith("Q")  # integer kernels listed first
    assert int8_cpu["summary"]["details"]["onnxruntime_cpu_kernels"]["QLinearConv"] == kernels["QLinearConv"]
    lr = np.random.default_rng(1).random((2, 3, 15, 10), dtype=np.float32)
    (q,) = run(ort_session(int8_cpu["out"]), {"lr": lr})
    (f,) = run(ort_session(int8_cpu["src"]), {"lr": lr})
    assert 0 < relative_error(torch.from_numpy(q), torch.from_numpy(f)) < 0.2
    estimator, restorer = contract.split_paths(int8_cpu["out"])
    idr = run(ort_session(estimator), {"lr": lr})
    (composed,) = run(ort_session(restorer), {"lr": lr, "idr_channel": idr[0], "idr_spatial": idr[1]})
    assert relative_error(torch.from_numpy(composed), torch.from_numpy(q)) <= 1e-5


def test_an_int8_model_on_the_other_target_warns(int8_cpu: dict, int8: dict) -> None:
    import warnings

    from lightbsr.runtime import load_backend

    with pytest.warns(RuntimeWarning, match="made for TensorRT"):
        load_backend("onnxruntime", int8["out"], device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_backend("onnxruntime", int8_cpu["out"], device="cpu")


def test_target_is_for_int8(tiny_export: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    import contextlib
    import io

    from lightbsr.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["quantize", str(tiny_export[0]), "--fp16", "--target", "cpu", "-o", str(tmp_path / "x.onnx")])
    assert code == 2 and "--target are for --int8" in err.getvalue() and not list(tmp_path.iterdir())


def test_calibration_crops_are_seeded_degraded_lr() -> None:
    crops = calibration_crops(IMAGES, count=4, size=12, seed=3)
    again = calibration_crops(IMAGES, count=4, size=12, seed=3)
    other = calibration_crops(IMAGES, count=4, size=12, seed=4)
    assert [c.shape for c in crops] == [(3, 12, 12)] * 4
    assert all(np.array_equal(a, b) for a, b in zip(crops, again, strict=True))
    assert not np.array_equal(crops[0], other[0])
    assert all(c.min() >= 0 and c.max() <= 1 and np.allclose(c * 255, np.round(c * 255), atol=1e-4) for c in crops)


def test_quantize_refuses_teachers_converted_and_corrupt_models(exported: dict[str, Exported], int8: dict) -> None:
    with pytest.raises(ConfigError, match="teacher"):
        quantize_int8(exported["lightbsr_teacher_x4_setting1"].onnx, int8["out"].with_name("t.onnx"), IMAGES)
    with pytest.raises(ModelFileError, match="already a int8"):
        quantize_fp16(int8["out"], int8["out"].with_name("x.onnx"))
    assert not int8["out"].with_name("t.onnx").exists() and not int8["out"].with_name("x.onnx").exists()


def test_cli_quantize_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lightbsr.cli import main

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    for args, message in (
        ([str(corrupt), "--fp16"], "corrupt.onnx: not a readable ONNX model"),
        ([str(tmp_path / "missing.onnx"), "--fp16"], "missing.onnx: no such file"),
        ([str(corrupt), "--int8"], "--int8 needs calibration images"),  # no --calib
    ):
        assert main(["quantize", *args, "-o", str(tmp_path / "o" / "q.onnx")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("lightbsr: error:"), err
        assert message in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_int8_drop_on_trained_weights(tmp_path: Path) -> None:
    """INT8 is judged as the papers judge models: Y-PSNR of the protocol (σ 2.4), here INT8 against FP32."""
    from lightbsr.errors import ConfigError as NoWeights
    from lightbsr.evaluation import evaluate
    from lightbsr.export import export_onnx
    from lightbsr.weights import default_checkpoint

    try:
        checkpoint = default_checkpoint()
    except NoWeights:
        pytest.skip("needs trained weights: the bundled model (lightbsr/weights) is not in this build")
    fp32 = export_onnx(checkpoint, tmp_path / "m.onnx", verify=False).path
    int8 = tmp_path / "m.int8.onnx"
    quantize_int8(fp32, int8, IMAGES.parent / "train", count=8, size=48, progress=False)

    def protocol(path: Path) -> float:
        model = ort_session(path)

        def upscale(lr: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(run(model, {"lr": lr.numpy().astype(np.float32)})[0])

        return evaluate(upscale, IMAGES, sigmas=[2.4], progress=False).mean_psnr(2.4)

    drop = protocol(fp32) - protocol(int8)
    assert drop <= 0.5, f"INT8 loses {drop:.2f} dB Y-PSNR against FP32"
