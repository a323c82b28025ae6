"""A Triton Inference Server model repository for a lightbsr ONNX model (``lightbsr export --triton DIR``).

Layout (``NAME`` defaults to ``lightbsr``)::

    DIR/NAME_onnx/config.pbtxt         platform onnxruntime_onnx
    DIR/NAME_onnx/1/model.onnx         the full graph (lr → sr)
    DIR/NAME_trt/config.pbtxt          platform tensorrt_plan
    DIR/NAME_trt/README.md             how to build the plan and serve (Triton ignores the file)
    DIR/NAME_trt/1/model.plan          NOT written: a TensorRT plan is built on the serving GPU with
                                       ``lightbsr build DIR/NAME_onnx/1/model.onnx -o DIR/NAME_trt/1/model.plan``

Both configurations name the graph's own inputs and outputs, with their types and dims as the ONNX
declares them (batch dim left out, ``max_batch_size`` set; dynamic dims ``-1``), so the two variants
are interchangeable for clients. Tiling with a shared degradation estimate is the client's job (the
Python or C++ runtime); the served model takes whole images within the engine's shape profile.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from lightbsr.errors import ConfigError, ModelFileError

__all__ = [
    "TensorSpec",
    "TritonRepository",
    "check_target",
    "model_config",
    "tensor_specs",
    "write_triton_repository",
]

ONNX_PLATFORM = "onnxruntime_onnx"
TRT_PLATFORM = "tensorrt_plan"
DEFAULT_MAX_BATCH = 4
"""Matches the default max profile of ``lightbsr build`` (4x3x512x512)."""

_TRITON_TYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as Triton sees it (without the batch dim)."""

    name: str
    data_type: str  # TYPE_FP32 | TYPE_FP16 | TYPE_BF16
    dims: tuple[int, ...]  # -1: dynamic


@dataclass
class TritonRepository:
    """What :func:`write_triton_repository` wrote."""

    directory: Path
    models: dict[str, Path] = field(default_factory=dict)
    """Model name → its folder."""
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    onnx_path: Path | None = None
    """The ONNX model in the repository (the input of ``lightbsr build``)."""
    plan_path: Path | None = None
    """Where the TensorRT plan must be built (not written here)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "directory": str(self.directory),
            "models": {name: str(path) for name, path in self.models.items()},
            "inputs": [spec.__dict__ for spec in self.inputs],
            "outputs": [spec.__dict__ for spec in self.outputs],
            "onnx_path": str(self.onnx_path) if self.onnx_path else None,
            "plan_path": str(self.plan_path) if self.plan_path else None,
        }


def tensor_specs(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of the graph, batch dim dropped, dynamic dims as -1."""
    initializers = {init.name for init in model.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        if tensor.elem_type not in _TRITON_TYPES:
            raise ModelFileError(f"tensor {value.name!r} has ONNX type {tensor.elem_type}, not a float type")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim]
        if len(dims) < 2 or dims[0] != -1:
            raise ModelFileError(f"tensor {value.name!r} needs a dynamic batch dim for Triton batching, got {dims}")
        return TensorSpec(value.name, _TRITON_TYPES[tensor.elem_type], tuple(dims[1:]))

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in model.graph.output]


def model_config(
    name: str,
    platform: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    instances: int = 1,
    kind: str = "KIND_GPU",
    dynamic_batching: bool = True,
) -> str:
    """A ``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``)."""

    def tensors(field_name: str, specs: list[TensorSpec]) -> list[str]:
        lines = [f"{field_name} ["]
        for i, spec in enumerate(specs):
            dims = ", ".join(str(d) for d in spec.dims)
            comma = "," if i < len(specs) - 1 else ""
            lines.append(f'  {{ name: "{spec.name}" data_type: {spec.data_type} dims: [ {dims} ] }}{comma}')
        return [*lines, "]"]

    lines = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch_size}",
        *tensors("input", inputs),
        *tensors("output", outputs),
        f"instance_group [ {{ count: {instances} kind: {kind} }} ]",
    ]
    if dynamic_batching and max_batch_size > 0:
        lines.append("dynamic_batching { }  # batches requests of the same image size")
    return "\n".join(lines) + "\n"


def check_target(
    directory: str | os.PathLike[str], *, name: str = "lightbsr", max_batch_size: int = 0, instances: int = 1
) -> None:
    """Raise ConfigError for bad options, or if ``directory`` already holds ``NAME_onnx`` or ``NAME_trt``."""
    if not name or not all(ch.isalnum() or ch in "_-" for ch in name):
        raise ConfigError(f"bad Triton model name {name!r}: use letters, digits, '_' and '-'")
    if max_batch_size < 0:
        raise ConfigError(f"max batch size must be ≥ 0, got {max_batch_size}")
    if instances < 1:
        raise ConfigError(f"instance count must be ≥ 1, got {instances}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is not a folder")
    for model_name in (f"{name}_onnx", f"{name}_trt"):
        if (directory / model_name).exists():
            raise ConfigError(f"{directory / model_name} already exists; remove it or choose another --triton-name")


def write_triton_repository(
    onnx_path: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    name: str = "lightbsr",
    max_batch_size: int = DEFAULT_MAX_BATCH,
    instances: int = 1,
    onnx_on_cpu: bool = False,
    dynamic_batching: bool = True,
) -> TritonRepository:
    """Write the Triton repository for ``onnx_path`` (a full graph) into ``directory``.

    The model folders ``NAME_onnx`` and ``NAME_trt`` must not exist yet (other models already in
    ``directory`` are left alone); they are assembled beside it and moved in only when complete.

    Raises:
        ConfigError: bad options, or the model folders already exist. ModelFileError: unreadable ONNX,
            or one Triton cannot batch (no dynamic batch dim).
    """
    check_target(directory, name=name, max_batch_size=max_batch_size, instances=instances)
    onnx_path, directory = Path(onnx_path), Path(directory)
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as err:  # onnx raises OSError, DecodeError, ValueError … for unreadable files
        raise ModelFileError(f"{onnx_path}: cannot read the ONNX model ({err})") from err
    inputs, outputs = tensor_specs(model)
    onnx_name, trt_name = f"{name}_onnx", f"{name}_trt"

    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=directory.parent))
    try:
        (staging / onnx_name / "1").mkdir(parents=True)
        shutil.copyfile(onnx_path, staging / onnx_name / "1" / "model.onnx")
        for model_name, platform, kind in (
            (onnx_name, ONNX_PLATFORM, "KIND_CPU" if onnx_on_cpu else "KIND_GPU"),
            (trt_name, TRT_PLATFORM, "KIND_GPU"),
        ):
            (staging / model_name).mkdir(exist_ok=True)
            config = model_config(
                model_name,
                platform,
                inputs,
                outputs,
                max_batch_size=max_batch_size,
                instances=instances,
                kind=kind,
                dynamic_batching=dynamic_batching,
            )
            (staging / model_name / "config.pbtxt").write_text(config)
        (staging / trt_name / "README.md").write_text(_readme(onnx_name, trt_name, inputs, max_batch_size))
        for model_name in (onnx_name, trt_name):
            (staging / model_name).replace(directory / model_name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TritonRepository(
        directory=directory,
        models={onnx_name: directory / onnx_name, trt_name: directory / trt_name},
        inputs=inputs,
        outputs=outputs,
        onnx_path=directory / onnx_name / "1" / "model.onnx",
        plan_path=directory / trt_name / "1" / "model.plan",
    )


def _readme(onnx_name: str, trt_name: str, inputs: list[TensorSpec], max_batch: int) -> str:
    lr = inputs[0]
    batch = max(max_batch, 1)
    return f"""# TensorRT variant of a lightbsr Triton model repository

- `{onnx_name}`: ONNX Runtime (`onnxruntime_onnx`), `{onnx_name}/1/model.onnx`. Ready to serve.
- `{trt_name}`: TensorRT (`tensorrt_plan`). **No plan is shipped**: a TensorRT engine only runs on the
  GPU model and TensorRT version it was built with, so build it on the serving machine, with the
  TensorRT version of the Triton container, and a max batch of at least `max_batch_size` ({max_batch}):

      cd ..   # the repository folder
      mkdir -p {trt_name}/1
      lightbsr build {onnx_name}/1/model.onnx -o {trt_name}/1/model.plan \\
          --min-shape 1x3x32x32 --opt-shape 1x3x256x256 --max-shape {batch}x3x512x512

  (`model.plan.json` beside it is lightbsr's sidecar and is ignored by Triton).

Until the plan exists, load only the ONNX model:

    tritonserver --model-repository=$PWD --model-control-mode=explicit --load-model={onnx_name}

and with it, everything: `tritonserver --model-repository=$PWD`.

Inputs and outputs (batch dim first, up to {max_batch}; -1: any size):
{chr(10).join(f"- `{spec.name}` {spec.data_type} [-1, {', '.join(map(str, spec.dims))}]" for spec in inputs)}

`{lr.name}` is RGB in [0, 1], NCHW; the output is unclamped. Requests are whole images within the
engine's shape profile: tile larger images on the client (`lightbsr upscale` / the C++ `lightbsr-trt`
do this with a shared degradation estimate).
"""
