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
from lightbsr.errors import ConfigError, ModelFileError
from lightbsr.triton import write_python_model, write_triton_repository

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
    python_dir = tmp_path / "repo" / "lightbsr"
    assert repo.models == {"lightbsr": python_dir, "lightbsr_onnx": onnx_dir, "lightbsr_trt": trt_dir}
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

    # The python-backend model: 8-bit images, the model file and its split graphs copied, named relative to 1/.
    config = parse_config(python_dir / "config.pbtxt")
    assert (config.name, config.backend, config.platform) == ("lightbsr", "python", "")
    assert config.max_batch_size == 8 and config.HasField("dynamic_batching")
    assert io_of(config) == (
        {contract.TRITON_IMAGE_INPUT: ("TYPE_UINT8", [-1, -1, -1])},
        {contract.TRITON_IMAGE_OUTPUT: ("TYPE_UINT8", [-1, -1, -1])},
    )
    assert {k: v.string_value for k, v in config.parameters.items()} == {contract.TRITON_MODEL_PARAMETER: "tiny.onnx"}
    assert sorted(p.name for p in (python_dir / "1").iterdir()) == [
        "model.py",
        "tiny.estimator.onnx",
        "tiny.onnx",
        "tiny.restorer.onnx",
    ]
    for name in ("tiny.onnx", "tiny.estimator.onnx", "tiny.restorer.onnx"):
        assert (python_dir / "1" / name).read_bytes() == (onnx_path.parent / name).read_bytes()
    assert "from lightbsr.runtime.triton_model import TritonPythonModel" in (python_dir / "1" / "model.py").read_text()

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


@pytest.mark.parametrize("existing", ["lightbsr", "lightbsr_trt"])
def test_existing_model_folder_is_refused_and_left_alone(
    tiny_export: tuple[Path, object], tmp_path: Path, existing: str
) -> None:
    onnx_path, _ = tiny_export
    (tmp_path / existing).mkdir()
    (tmp_path / existing / "keep").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        write_triton_repository(onnx_path, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]
    assert (tmp_path / existing / "keep").read_text() == "mine"


def test_python_model_for_serve_names_the_model_in_place(tiny_export: tuple[Path, object], tmp_path: Path) -> None:
    """Without copy (lightbsr serve's temporary repository) the config names the model by its absolute path."""
    onnx_path, _ = tiny_export
    folder = write_python_model(
        onnx_path, tmp_path, name="sr", copy=False, kind="KIND_CPU", instances=3, parameters={"tile": "64", "x": 'a"b'}
    )
    config = parse_config(folder / "config.pbtxt")
    assert {k: v.string_value for k, v in config.parameters.items()} == {
        "tile": "64",
        "x": 'a"b',  # quoted for the text format
        contract.TRITON_MODEL_PARAMETER: str(onnx_path.resolve()),
    }
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [
        (3, "KIND_CPU")
    ]
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model.py"]
    with pytest.raises(ModelFileError, match="no such model file"):
        write_python_model(tmp_path / "missing.onnx", tmp_path / "other")
    with pytest.raises(ConfigError, match="instance kind"):
        write_python_model(onnx_path, tmp_path / "other", kind="KIND_TPU")
    assert not (tmp_path / "other" / "lightbsr").exists()


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
    # --triton implies --split: the python-backend model gets the split graphs for its shared estimate.
    assert summary["python_model"] == "lightbsr"
    assert sorted(p.name for p in (repo / "lightbsr" / "1").iterdir()) == [
        "model.estimator.onnx",
        "model.onnx",
        "model.py",
        "model.restorer.onnx",
    ]
    assert onnx.load(str(repo / "lightbsr_onnx" / "1" / "model.onnx")).metadata_props  # the exported graph itself

    # The same target again: refused before exporting, one line, exit 2.
    assert main(["export", str(checkpoint), "--triton", str(repo)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(checkpoint)]) == 2
    assert "--triton DIR" in capsys.readouterr().err
