"""INT8 with a quality bound: Q/DQ bypass per node, per-layer sensitivity, greedy search (lightbsr quantize
--int8 --max-drop), on a small synthetic graph with one layer INT8 cannot carry, and on the tiny LightBSR."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lightbsr import contract
from lightbsr.cli import main
from lightbsr.errors import ConfigError
from lightbsr.export.int8_search import float_nodes, quantized_nodes, search
from lightbsr.runtime.onnxruntime_backend import run, session

IMAGES = Path(__file__).parent / "data" / "images"
RNG = np.random.default_rng(0)
X = RNG.random((4, 3, 12, 12), dtype=np.float32)


def _graph() -> onnx.ModelProto:
    """x → conv_a → relu → conv_b → conv_c. conv_a's bias puts a huge value in one channel, so the per-tensor
    INT8 scale of conv_b's input leaves the other channels a few levels: conv_b is the one sensitive layer."""
    w_a = RNG.normal(size=(8, 3, 3, 3)).astype(np.float32) * 0.3
    b_a = np.zeros(8, np.float32)
    b_a[0] = 400.0  # one channel ~400, the others ~1
    w_b = RNG.normal(size=(8, 8, 3, 3)).astype(np.float32) * 0.3
    w_b[:, 0] = 0.0  # conv_b ignores the huge channel: its output depends on the small ones only
    w_c = RNG.normal(size=(3, 8, 3, 3)).astype(np.float32) * 0.3
    inits = [numpy_helper.from_array(a, n) for a, n in ((w_a, "w_a"), (b_a, "b_a"), (w_b, "w_b"), (w_c, "w_c"))]
    pads = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w_a", "b_a"], ["a"], name="conv_a", **pads),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w_b"], ["b"], name="conv_b", **pads),
        helper.make_node("Conv", ["b", "w_c"], ["y"], name="conv_c", **pads),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


class _Reader:
    def __init__(self) -> None:
        self.items = iter([{"x": X[i : i + 1]} for i in range(len(X))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    fp32 = _graph()
    path = tmp_path_factory.mktemp("int8") / "q.onnx"
    copy = onnx.ModelProto()
    copy.CopyFrom(fp32)
    quantize_static(
        copy, path, _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, extra_options={
            "ActivationSymmetric": True, "QuantizeBias": False, "OpTypesToExcludeOutputQuantization": ["Conv"],
        },
    )  # fmt: skip
    return onnx.load(str(path)), fp32


def _out(model: onnx.ModelProto) -> np.ndarray:
    return run(session(model.SerializeToString()), {"x": X})[0]


def _noise(fp32: onnx.ModelProto):  # type: ignore[no-untyped-def]
    reference = _out(fp32)
    return lambda m: float(np.mean((_out(m) - reference) ** 2))


def _drop(fp32: onnx.ModelProto):  # type: ignore[no-untyped-def]
    """A dB-like drop: how far below 40 dB the candidate's PSNR against FP32 falls (peak: the FP32 range)."""
    reference = _out(fp32)
    peak = float(np.abs(reference).max())

    def drop(m: onnx.ModelProto) -> float:
        mse = float(np.mean((_out(m) - reference) ** 2))
        return max(0.0, 40.0 - 10 * np.log10(peak**2 / max(mse, 1e-30)))

    return drop


def test_quantized_nodes_are_the_compute_layers(graphs: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    qdq, _ = graphs
    assert quantized_nodes(qdq) == ["conv_a", "conv_b", "conv_c"]


def test_float_nodes_restores_fp32_inputs_and_prunes_qdq(graphs: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    qdq, fp32 = graphs
    everything = float_nodes(qdq, fp32, quantized_nodes(qdq))
    onnx.checker.check_model(everything, full_check=True)
    assert not [n for n in everything.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    np.testing.assert_array_equal(_out(everything), _out(fp32))
    only_c = float_nodes(qdq, fp32, ["conv_a", "conv_b"])
    by_name = {n.name: n for n in only_c.graph.node}
    assert list(by_name["conv_b"].input) == ["r", "w_b"] and quantized_nodes(only_c) == ["conv_c"]
    with pytest.raises(ConfigError, match="not in the FP32 graph"):
        float_nodes(qdq, fp32, ["nope"])


def test_search_leaves_the_sensitive_layer_in_float(graphs: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    qdq, fp32 = graphs
    drop = _drop(fp32)
    full = drop(qdq)
    assert full > 5.0, "the planted layer must make full INT8 fail the bound"
    result = search(qdq, fp32, drop, _noise(fp32), max_drop=1.0)
    assert result.float_nodes == ["conv_b"], result.sensitivity
    assert result.drop <= 1.0 < result.full_int8_drop == full
    assert result.top_sensitivity(1)[0][0] == "conv_b"
    assert result.steps[0] == {"float_nodes": 0, "drop": full} and result.steps[-1]["float_nodes"] == 1


def test_search_stops_when_the_bound_is_met_or_cannot_be(graphs: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    qdq, fp32 = graphs
    drop, noise = _drop(fp32), _noise(fp32)
    easy = search(qdq, fp32, drop, noise, max_drop=1000.0)
    assert easy.float_nodes == [] and not easy.sensitivity  # no search needed
    with pytest.raises(ConfigError, match="no layer may stay in float"):
        search(qdq, fp32, drop, noise, max_drop=1.0, max_float=0)
    with pytest.raises(ConfigError, match="cannot stay within"):
        search(qdq, fp32, lambda m: 99.0, noise, max_drop=1.0, max_float=2)
    with pytest.raises(ConfigError, match=">= 0"):
        search(qdq, fp32, drop, noise, max_drop=-1.0)


def _quantize(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["quantize", *args])
    return code, out.getvalue(), err.getvalue()


def test_cli_max_drop_records_the_measured_drop(tiny_export: tuple[Path, object], tmp_path: Path) -> None:
    src, _ = tiny_export
    out = tmp_path / "tiny.int8.onnx"
    code, text, _ = _quantize(
        str(src), "--int8", "--calib", str(IMAGES), "--calib-count", "2", "--calib-size", "12",
        "--max-drop", "100", "--eval-count", "2", "--eval-size", "16", "-o", str(out),
    )  # fmt: skip
    assert code == 0 and "held-out crops" in text and "bound 100.0 dB" in text
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    recorded = json.loads(meta["lightbsr.int8"])
    quality = json.loads(meta["lightbsr.int8"])["quality"]
    assert quality["max_drop_db"] == 100.0 and quality["float_layers"] == [] and quality["drop_db"] <= 100.0
    assert quality["held_out"] == {"images": 1, "crops": 2, "size": 16, "seed": 1}
    assert meta[contract.META_PRECISION] == "int8" and recorded is not None


def test_cli_max_drop_that_cannot_be_met_writes_nothing(tiny_export: tuple[Path, object], tmp_path: Path) -> None:
    src, _ = tiny_export
    out = tmp_path / "never.onnx"
    code, _, err = _quantize(
        str(src), "--int8", "--calib", str(IMAGES), "--calib-count", "2", "--calib-size", "12",
        "--max-drop", "0", "--max-float-layers", "0", "--eval-count", "2", "--eval-size", "16", "-o", str(out),
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "no layer may stay in float" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "extra", [["--fp16", "--max-drop", "0.2"], ["--int8", "--calib", str(IMAGES), "--max-float-layers", "3"]]
)
def test_cli_quality_options_need_int8_and_max_drop(
    tiny_export: tuple[Path, object], tmp_path: Path, extra: list[str]
) -> None:
    code, _, err = _quantize(str(tiny_export[0]), *extra, "-o", str(tmp_path / "x.onnx"))
    assert code == 2 and err.count("\n") == 1 and not list(tmp_path.iterdir())


def test_cli_max_drop_composes_with_the_cpu_target(tiny_export: tuple[Path, object], tmp_path: Path) -> None:
    src, _ = tiny_export
    out = tmp_path / "tiny.int8.onnx"
    code, text, err = _quantize(
        str(src), "--int8", "--target", "cpu", "--calib", str(IMAGES), "--calib-count", "2", "--calib-size", "12",
        "--max-drop", "0", "--max-float-layers", "1000", "--eval-count", "2", "--eval-size", "16", "-o", str(out),
    )  # fmt: skip
    assert code == 0, err
    model = onnx.load(str(out), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    quality = json.loads(meta["lightbsr.int8"])["quality"]
    assert meta[contract.META_INT8_TARGET] == "cpu" and quality["drop_db"] <= 0.0
    assert quality["full_int8_drop_db"] > 0 and quality["float_layers"]  # the search left layers in float
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    by_name = {n.name: n for n in model.graph.node}
    for name in quality["float_layers"]:  # activation and weight in float (an INT32 bias stays dequantized)
        assert not any(i in dequantized for i in by_name[name].input[:2]), name
    assert "INT8 for cpu; ONNX Runtime CPU runs:" in text
