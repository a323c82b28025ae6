"""``lightbsr export --triton DIR``: the repository's config.pbtxt files parse with Triton's own ModelConfig proto.

The proto comes from tritonclient (``tritonclient.grpc.model_config_pb2``, in the ``[dev]`` extra).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from lightbsr import contract
from lightbsr.cli import main
from lightbsr.errors import ConfigError
from lightbsr.export.triton import write_triton_repository

try:
    from tritonclient.grpc import model_config_pb2
except (ImportError, RuntimeError):  # tritonclient without its grpc extra raises RuntimeError
    pytest.skip("needs tritonclient[grpc] (the [dev] extra) for Triton's ModelConfig proto", allow_module_level=True)
from google.protobuf import text_format


def parse_config(path: Path):  # -> model_config_pb2.ModelConfig
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def io_of(config) -> tuple[dict[str, tuple[str, list[int]]], dict[str, tuple[str, list[int]]]]:
    """{name: (data type name, dims)} of the inputs and of the outputs."""

    def table(tensors) -> dict[str, tuple[str, list[int]]]:
        return {t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in tensors}

    return table(config.input), table(config.output)


def onnx_io(path: Path) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """{name: dims} of the ONNX graph's inputs and outputs (dynamic dims as -1)."""
    graph = onnx.load(str(path)).graph

    def dims(value: onnx.ValueInfoProto) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]

    return {v.name: dims(v) for v in graph.input}, {v.name: dims(v) for v in graph.output}


def test_repository_configs_parse_with_the_triton_proto(tiny_export: tuple[Path, object], tmp_path: Path) -> None:
    onnx_path, _ = tiny_export
    repo = write_triton_repository(onnx_path, tmp_path / "repo", max_batch_size=8, instances=2)

    onnx_dir, trt_dir = tmp_path / "repo" / "lightbsr_onnx", tmp_path / "repo" / "lightbsr_trt"
    assert repo.models == {"lightbsr_onnx": onnx_dir, "lightbsr_trt": trt_dir}
    expected_in = {contract.INPUT_LR: ("TYPE_FP32", [3, -1, -1])}
    expected_out = {contract.OUTPUT_SR: ("TYPE_FP32", [3, -1, -1])}
    for folder, platform in ((onnx_dir, "onnxruntime_onnx"), (trt_dir, "tensorrt_plan")):
        config = parse_config(folder / "config.pbtxt")
        assert config.name == folder.name  # Triton requires the folder's name
        assert config.platform == platform
        assert config.max_batch_size == 8
        assert io_of(config) == (expected_in, expected_out)
        assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [
            (2, "KIND_GPU")
        ]
        assert config.HasField("dynamic_batching")

    # The ONNX in the repository names the same tensors, with a dynamic batch dim before the config's dims.
    model = onnx_dir / "1" / "model.onnx"
    assert model.read_bytes() == onnx_path.read_bytes()
    inputs, outputs = onnx_io(model)
    assert set(inputs) == set(expected_in) and set(outputs) == set(expected_out)
    for name, dims in {**inputs, **outputs}.items():
        assert dims[0] == -1
        assert dims[1:] == {**expected_in, **expected_out}[name][1]

    # No fake plan: the TensorRT version folder is left to `lightbsr build`, which the README spells out.
    assert not (trt_dir / "1").exists()
    assert repo.plan_path == trt_dir / "1" / "model.plan"
    assert (
        "lightbsr build lightbsr_onnx/1/model.onnx -o lightbsr_trt/1/model.plan" in (trt_dir / "README.md").read_text()
    )


def test_onnx_variant_runs_a_batch_as_configured(tiny_export: tuple[Path, object], tmp_path: Path) -> None:
    import onnxruntime as ort

    onnx_path, _ = tiny_export
    write_triton_repository(onnx_path, tmp_path, max_batch_size=2, onnx_on_cpu=True)
    config = parse_config(tmp_path / "lightbsr_onnx" / "config.pbtxt")
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_CPU"
    session = ort.InferenceSession(
        str(tmp_path / "lightbsr_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    lr = np.random.default_rng(0).random((config.max_batch_size, 3, 9, 7), dtype=np.float32)
    (sr,) = session.run([config.output[0].name], {config.input[0].name: lr})
    assert sr.shape == (2, 3, 36, 28)


def test_existing_model_folder_is_refused_and_left_alone(tiny_export: tuple[Path, object], tmp_path: Path) -> None:
    onnx_path, _ = tiny_export
    (tmp_path / "lightbsr_trt").mkdir()
    (tmp_path / "lightbsr_trt" / "keep").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        write_triton_repository(onnx_path, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lightbsr_trt"]
    assert (tmp_path / "lightbsr_trt" / "keep").read_text() == "mine"


def test_cli_export_triton(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from export_fixtures import reference_checkpoint

    checkpoint, _ = reference_checkpoint(tmp_path, "lightbsr_student_x4")  # the fastest to trace
    repo = tmp_path / "triton"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["export", str(checkpoint), "--triton", str(repo), "--no-simplify", "--no-verify", "--json"])
    assert code == 0
    summary = json.loads(out.getvalue())["triton"]
    assert summary["inputs"] == [{"name": "lr", "data_type": "TYPE_FP32", "dims": [3, -1, -1]}]
    assert summary["outputs"] == [{"name": "sr", "data_type": "TYPE_FP32", "dims": [3, -1, -1]}]
    config = parse_config(repo / "lightbsr_trt" / "config.pbtxt")
    assert io_of(config)[0] == {"lr": ("TYPE_FP32", [3, -1, -1])}
    assert onnx.load(str(repo / "lightbsr_onnx" / "1" / "model.onnx")).metadata_props  # the exported graph itself

    # The same target again: refused before exporting, one line, exit 2.
    assert main(["export", str(checkpoint), "--triton", str(repo)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(checkpoint)]) == 2
    assert "--triton DIR" in capsys.readouterr().err
