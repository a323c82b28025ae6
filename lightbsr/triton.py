"""A Triton Inference Server model repository of a lightbsr model (``lightbsr export --triton``, ``lightbsr serve``).

Layout (``NAME`` defaults to ``lightbsr``)::

    DIR/NAME/config.pbtxt              backend python: 8-bit images in and out, tiled, shared degradation estimate
    DIR/NAME/1/model.py                imports lightbsr.runtime.triton_model (lightbsr must be installed in the
                                       server's Python), which runs lightbsr.runtime.Upscaler
    DIR/NAME/1/MODEL.onnx              the full graph and its split graphs (MODEL.estimator.onnx, MODEL.restorer.onnx)
    DIR/NAME_onnx/config.pbtxt         platform onnxruntime_onnx
    DIR/NAME_onnx/1/model.onnx         the full graph (lr → sr)
    DIR/NAME_trt/config.pbtxt          platform tensorrt_plan
    DIR/NAME_trt/README.md             how to build the plan and serve (Triton ignores the file)
    DIR/NAME_trt/1/model.plan          NOT written: a TensorRT plan is built on the serving GPU with
                                       ``lightbsr build DIR/NAME_onnx/1/model.onnx -o DIR/NAME_trt/1/model.plan``

The python-backend model ``NAME`` takes ``uint8`` images ``(N, H, W, C)`` (input ``image``, output
``upscaled``, :mod:`lightbsr.contract`) of any size: it tiles them with one degradation estimate per image,
as ``lightbsr upscale`` does, on ONNX Runtime (or TensorRT, torch: whatever the model file is) on the
instance's device; request parameters ``tile``, ``tile_overlap`` and ``precision`` override the defaults.
The ``onnxruntime_onnx`` and ``tensorrt_plan`` variants name the graph's own inputs and outputs, with their
types and dims as the ONNX declares them (batch dim left out, ``max_batch_size`` set; dynamic dims ``-1``),
so they are interchangeable for clients; they take whole float images within the engine's shape profile,
and tiling with a shared degradation estimate is then the client's job (the Python or C++ runtime).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from lightbsr import contract
from lightbsr.errors import ConfigError, ModelFileError

__all__ = [
    "TensorSpec",
    "TritonRepository",
    "check_target",
    "model_config",
    "tensor_specs",
    "write_python_model",
    "write_triton_repository",
]

ONNX_PLATFORM = "onnxruntime_onnx"
TRT_PLATFORM = "tensorrt_plan"
PYTHON_BACKEND = "python"
"""Not a platform: the python-backend model's config says ``backend: "python"``."""
KINDS = ("KIND_AUTO", "KIND_GPU", "KIND_CPU")
PYTHON_MODEL_SOURCE = '''"""lightbsr's Triton python-backend model (the code is in the lightbsr package)."""

from lightbsr.runtime.triton_model import TritonPythonModel

__all__ = ["TritonPythonModel"]
'''
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
    python_model: str | None = None
    """Name of the python-backend model (8-bit images, tiled)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "directory": str(self.directory),
            "models": {name: str(path) for name, path in self.models.items()},
            "inputs": [spec.__dict__ for spec in self.inputs],
            "outputs": [spec.__dict__ for spec in self.outputs],
            "onnx_path": str(self.onnx_path) if self.onnx_path else None,
            "plan_path": str(self.plan_path) if self.plan_path else None,
            "python_model": self.python_model,
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
    parameters: Mapping[str, str] | None = None,
) -> str:
    """A ``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``).

    ``platform`` is :data:`ONNX_PLATFORM`, :data:`TRT_PLATFORM` or :data:`PYTHON_BACKEND` (written as
    ``backend: "python"``); ``parameters`` become the config's string ``parameters``.
    """

    def tensors(field_name: str, specs: list[TensorSpec]) -> list[str]:
        lines = [f"{field_name} ["]
        for i, spec in enumerate(specs):
            dims = ", ".join(str(d) for d in spec.dims)
            comma = "," if i < len(specs) - 1 else ""
            lines.append(f'  {{ name: "{spec.name}" data_type: {spec.data_type} dims: [ {dims} ] }}{comma}')
        return [*lines, "]"]

    if kind not in KINDS:
        raise ConfigError(f"unknown instance kind {kind!r}; choose from {', '.join(KINDS)}")
    lines = [
        f'name: "{name}"',
        f'backend: "{PYTHON_BACKEND}"' if platform == PYTHON_BACKEND else f'platform: "{platform}"',
        f"max_batch_size: {max_batch_size}",
        *tensors("input", inputs),
        *tensors("output", outputs),
        f"instance_group [ {{ count: {instances} kind: {kind} }} ]",
    ]
    if dynamic_batching and max_batch_size > 0:
        lines.append("dynamic_batching { }  # batches requests of the same image size")
    for key, value in (parameters or {}).items():
        lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    if any(ord(ch) < 32 for ch in text):
        raise ConfigError(f"a Triton config parameter cannot hold control characters: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


IMAGE_INPUTS = [TensorSpec(contract.TRITON_IMAGE_INPUT, "TYPE_UINT8", (-1, -1, -1))]
IMAGE_OUTPUTS = [TensorSpec(contract.TRITON_IMAGE_OUTPUT, "TYPE_UINT8", (-1, -1, -1))]


def model_files(model: str | os.PathLike[str]) -> list[Path]:
    """The files a model is made of: the given file and, for an ONNX model, its split graphs when they exist."""
    model = Path(model)
    if not model.is_file():
        raise ModelFileError(f"{model}: no such model file")
    return [model, *(p for p in contract.split_paths(model) if model.suffix == ".onnx" and p.is_file())]


def write_python_model(
    model: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    name: str = "lightbsr",
    copy: bool = True,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    instances: int = 1,
    kind: str = "KIND_GPU",
    dynamic_batching: bool = True,
    parameters: Mapping[str, str] | None = None,
) -> Path:
    """Write the python-backend model ``directory/name`` (config.pbtxt, 1/model.py) that serves ``model``.

    With ``copy`` the model's files (:func:`model_files`) go into the version folder and the config names
    them relative to it (a self-contained repository); without, the config names ``model`` by its absolute
    path (``lightbsr serve``'s temporary repository). ``parameters`` are further settings of
    :class:`lightbsr.runtime.triton_model.ServeSettings`. ``directory/name`` must not exist; it is assembled
    beside it and moved in only when complete. Returns the model folder.
    """
    check_target(directory, name=name, max_batch_size=max_batch_size, instances=instances, variants=("",))
    directory = Path(directory)
    files = model_files(model)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=directory.parent))
    try:
        _stage_python_model(
            staging,
            name,
            files,
            copy=copy,
            max_batch_size=max_batch_size,
            instances=instances,
            kind=kind,
            dynamic_batching=dynamic_batching,
            parameters=parameters,
        )
        (staging / name).replace(directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory / name


def _stage_python_model(
    staging: Path,
    name: str,
    files: list[Path],
    *,
    copy: bool,
    max_batch_size: int,
    instances: int,
    kind: str,
    dynamic_batching: bool,
    parameters: Mapping[str, str] | None,
) -> None:
    version = staging / name / "1"
    version.mkdir(parents=True)
    if copy:
        for source in files:
            shutil.copyfile(source, version / source.name)
    settings = {
        **(parameters or {}),
        contract.TRITON_MODEL_PARAMETER: files[0].name if copy else str(files[0].resolve()),
    }
    (version / "model.py").write_text(PYTHON_MODEL_SOURCE)
    config = model_config(
        name,
        PYTHON_BACKEND,
        IMAGE_INPUTS,
        IMAGE_OUTPUTS,
        max_batch_size=max_batch_size,
        instances=instances,
        kind=kind,
        dynamic_batching=dynamic_batching,
        parameters=settings,
    )
    (staging / name / "config.pbtxt").write_text(config)


def check_target(
    directory: str | os.PathLike[str],
    *,
    name: str = "lightbsr",
    max_batch_size: int = 0,
    instances: int = 1,
    variants: tuple[str, ...] = ("", "_onnx", "_trt"),
) -> None:
    """Raise ConfigError for bad options, or if ``directory`` already holds a model ``NAME + variant``."""
    if not name or not all(ch.isalnum() or ch in "_-" for ch in name):
        raise ConfigError(f"bad Triton model name {name!r}: use letters, digits, '_' and '-'")
    if max_batch_size < 0:
        raise ConfigError(f"max batch size must be ≥ 0, got {max_batch_size}")
    if instances < 1:
        raise ConfigError(f"instance count must be ≥ 1, got {instances}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is not a folder")
    for model_name in (name + variant for variant in variants):
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

    The model folders ``NAME``, ``NAME_onnx`` and ``NAME_trt`` must not exist yet (other models already in
    ``directory`` are left alone); they are assembled beside it and moved in only when complete. The
    python-backend model ``NAME`` gets ``onnx_path`` and its split graphs, when they exist beside it (without
    them it still tiles, but estimates the degradation per tile).

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
        (staging / trt_name / "README.md").write_text(_readme(name, onnx_name, trt_name, inputs, max_batch_size))
        _stage_python_model(
            staging,
            name,
            model_files(onnx_path),
            copy=True,
            max_batch_size=max_batch_size,
            instances=instances,
            kind="KIND_CPU" if onnx_on_cpu else "KIND_GPU",
            dynamic_batching=dynamic_batching,
            parameters=None,
        )
        for model_name in (name, onnx_name, trt_name):
            (staging / model_name).replace(directory / model_name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TritonRepository(
        directory=directory,
        models={name: directory / name, onnx_name: directory / onnx_name, trt_name: directory / trt_name},
        inputs=inputs,
        outputs=outputs,
        onnx_path=directory / onnx_name / "1" / "model.onnx",
        plan_path=directory / trt_name / "1" / "model.plan",
        python_model=name,
    )


def _readme(name: str, onnx_name: str, trt_name: str, inputs: list[TensorSpec], max_batch: int) -> str:
    lr = inputs[0]
    batch = max(max_batch, 1)
    return f"""# TensorRT variant of a lightbsr Triton model repository

- `{name}`: the python backend running lightbsr's tiled runtime (8-bit images in and out, any size).
  Ready to serve where lightbsr is installed in the server's Python (see lightbsr's docs/deploy.md).
- `{onnx_name}`: ONNX Runtime (`onnxruntime_onnx`), `{onnx_name}/1/model.onnx`. Ready to serve.
- `{trt_name}`: TensorRT (`tensorrt_plan`). **No plan is shipped**: a TensorRT engine only runs on the
  GPU model and TensorRT version it was built with, so build it on the serving machine, with the
  TensorRT version of the Triton container, and a max batch of at least `max_batch_size` ({max_batch}):

      cd ..   # the repository folder
      mkdir -p {trt_name}/1
      lightbsr build {onnx_name}/1/model.onnx -o {trt_name}/1/model.plan \\
          --min-shape 1x3x32x32 --opt-shape 1x3x256x256 --max-shape {batch}x3x512x512

  (`model.plan.json` beside it is lightbsr's sidecar and is ignored by Triton).

Until the plan exists, load the other two:

    tritonserver --model-repository=$PWD --model-control-mode=explicit --load-model={name} --load-model={onnx_name}

and with it, everything: `tritonserver --model-repository=$PWD`.

Inputs and outputs (batch dim first, up to {max_batch}; -1: any size):
{chr(10).join(f"- `{spec.name}` {spec.data_type} [-1, {', '.join(map(str, spec.dims))}]" for spec in inputs)}

`{lr.name}` is RGB in [0, 1], NCHW; the output is unclamped. Requests are whole images within the
engine's shape profile: tile larger images on the client (`lightbsr upscale` / the C++ `lightbsr-trt`
do this with a shared degradation estimate), or serve `{name}`, which does it on the server.
"""
