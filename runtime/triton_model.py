"""lightbsr's Triton python-backend model: :class:`~lightbsr.runtime.Upscaler` behind Triton Inference Server.

Triton loads ``model.py`` from a repository written by :mod:`lightbsr.triton` (``lightbsr export
--triton``, ``lightbsr serve``); that file only imports :class:`TritonPythonModel` from here, so the serving
code is the package's own, and tested with it. lightbsr must be installed in the Python that Triton's
python-backend stub runs (see docs/deploy.md).

Each model instance is a process of its own on one device: a ``KIND_GPU`` instance runs on ``cuda:N``, a
``KIND_CPU`` one on the CPU, where the instances share the CPUs this process may use
(:func:`lightbsr.hardware.available_cpus`) unless the ``threads`` parameter says otherwise. Whatever the
model file is (ONNX with its split graphs, TensorRT engines, a checkpoint), it runs as ``lightbsr upscale``
runs it: tiled where the image needs it, with one degradation estimate per image shared by the tiles.

Requests: input ``image``, uint8 ``(N, H, W, C)`` with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA);
output ``upscaled``, uint8 ``(N, scale·H, scale·W, C)``. Optional request parameters (Triton's request
``parameters``): ``tile`` (LR pixels; 0: never tile), ``tile_overlap`` and ``precision`` (``fp32``, ``fp16``,
``bf16``: a second backend is opened for it on first use, if the model file allows it). A request that cannot
be served gets an error response of one line; the other requests of a batch are served all the same.

The model's settings are the string ``parameters`` of its config.pbtxt (:class:`ServeSettings`).
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from lightbsr import contract
from lightbsr.errors import ConfigError, InputImageError, LightBSRError
from lightbsr.runtime.backend import check_precision, choose_backend

__all__ = ["DEFAULT_MAX_PIXELS", "RequestOptions", "ServeSettings", "TritonPythonModel", "request_options"]

DEFAULT_MAX_PIXELS = 2048 * 2048
"""Largest LR image (pixels) a request may carry unless the model's ``max_pixels`` says otherwise: the output,
the tile blender and the degradation estimate of a 2048×2048 image take a few GB of memory."""

REQUEST_PARAMETERS = ("tile", "tile_overlap", "precision")

pb_utils: Any = None
"""``triton_python_backend_utils``: importable only inside Triton's python-backend stub."""


@dataclass(frozen=True)
class ServeSettings:
    """The python-backend model's settings: the string ``parameters`` of its config.pbtxt."""

    model: str
    """The model file: a path relative to the model's version folder, or absolute."""
    backend: str = "auto"
    tile: int | None = None
    """Tile size in LR pixels; ``None``: from free memory (the whole image where it fits); 0: never tile."""
    tile_overlap: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Largest LR image (height × width) a request may carry."""
    threads: int | None = None
    """Compute threads of each CPU instance; ``None``: the available CPUs shared between the instances."""

    def to_parameters(self) -> dict[str, str]:
        """The config parameters (``model`` and unset values left out: the writer of the config adds the model)."""
        return {
            f.name: str(getattr(self, f.name))
            for f in fields(self)
            if f.name != contract.TRITON_MODEL_PARAMETER and getattr(self, f.name) is not None
        }

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> ServeSettings:
        """Parse the config's parameters; ConfigError names an unknown or bad one."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(parameters) - known)
        if unknown:
            raise ConfigError(f"unknown lightbsr model parameter(s) {', '.join(unknown)}; known: {', '.join(known)}")
        if not parameters.get(contract.TRITON_MODEL_PARAMETER):
            raise ConfigError(f"the model config has no {contract.TRITON_MODEL_PARAMETER!r} parameter (the model file)")
        values: dict[str, Any] = dict(parameters)
        for name in ("tile", "tile_overlap", "threads", "max_pixels"):
            if name in values:
                values[name] = _count(values[name], name, minimum=1 if name in ("threads", "max_pixels") else 0)
        return cls(**values)


@dataclass(frozen=True)
class RequestOptions:
    """What one request asks for beyond the model's settings (``None``: the model's setting)."""

    tile: int | None = None
    tile_overlap: int | None = None
    precision: str | None = None


def request_options(parameters: Mapping[str, object]) -> RequestOptions:
    """A request's parameters → :class:`RequestOptions`; ConfigError names an unknown or bad one."""
    unknown = sorted(set(parameters) - set(REQUEST_PARAMETERS))
    if unknown:
        raise ConfigError(f"unknown request parameter(s) {', '.join(unknown)}; known: {', '.join(REQUEST_PARAMETERS)}")
    precision = parameters.get("precision")
    check_precision(precision)
    tile, overlap = parameters.get("tile"), parameters.get("tile_overlap")
    return RequestOptions(
        tile=None if tile is None else _count(tile, "tile"),
        tile_overlap=None if overlap is None else _count(overlap, "tile_overlap"),
        precision=None if precision is None else str(precision),
    )


def _count(value: object, name: str, minimum: int = 0) -> int:
    """An integer ≥ ``minimum`` from an int or a string of digits (Triton passes parameters as either)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer ≥ {minimum}, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return number


class TritonPythonModel:
    """The class Triton's python backend instantiates, once per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        global pb_utils
        import triton_python_backend_utils  # type: ignore[import-not-found]  # only inside Triton's stub

        pb_utils = triton_python_backend_utils
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.settings = ServeSettings.from_parameters(parameters)
        model = Path(self.settings.model)
        if not model.is_absolute():
            model = Path(args["model_repository"]) / args["model_version"] / model
        self.model_path = model
        gpu = args.get("model_instance_kind") == "GPU"
        self.device = f"cuda:{args.get('model_instance_device_id', '0')}" if gpu else "cpu"
        self.threads = self.settings.threads
        if self.threads is None and not gpu:
            from lightbsr.hardware import available_cpus

            instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
            self.threads = max(1, available_cpus() // instances)
        self.batched = int(config.get("max_batch_size", 0)) > 0
        """Whether requests carry a batch dim ((N, H, W, C)); with max_batch_size 0 they are (H, W, C)."""
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.backends: dict[str | None, Any] = {}
        backend = self._backend(None)  # a model that cannot be opened fails the load, with its reason
        pb_utils.Logger.log_info(
            f"lightbsr: {args.get('model_instance_name')} runs {model} on "
            + ", ".join(f"{key} {value}" for key, value in backend.describe().items() if key != "graphs")
            + f", threads {self.threads}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._respond(request) for request in requests]

    def finalize(self) -> None:
        self.backends.clear()

    # ------------------------------------------------------------------ internals

    def _respond(self, request: Any) -> Any:
        try:
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            if tensor is None:  # Triton refuses such requests before they get here
                raise InputImageError(f"the request has no input {self.input_name!r}")
            images = tensor.as_numpy() if self.batched else tensor.as_numpy()[None]
            options = request_options(json.loads(request.parameters() or "{}"))
            upscaler = self._upscaler(options)
            if images.shape[0] == 0:
                raise InputImageError("the request holds no image (batch size 0)")
            outputs = np.stack([self._upscale(upscaler, image) for image in images])
            return pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(self.output_name, outputs if self.batched else outputs[0])]
            )
        except LightBSRError as err:
            return _error(err, pb_utils.TritonError.INVALID_ARG)
        except Exception as err:  # a bug or a backend failure: answer this request, keep serving the others
            pb_utils.Logger.log_error(f"lightbsr: {traceback.format_exc()}")
            return _error(err, pb_utils.TritonError.INTERNAL)

    def _upscale(self, upscaler: Any, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        if height * width > self.settings.max_pixels:
            raise InputImageError(
                f"a {width}×{height} image has {height * width} pixels; this model takes at most "
                f"{self.settings.max_pixels} (its max_pixels parameter, lightbsr serve --max-pixels)"
            )
        out = upscaler.upscale(image)
        return out[:, :, None] if out.ndim == 2 else out  # gray comes back (H, W): keep the channel axis

    def _upscaler(self, options: RequestOptions) -> Any:
        from lightbsr.runtime.upscaler import Upscaler

        return Upscaler(
            self._backend(options.precision),
            tile=self.settings.tile if options.tile is None else options.tile,
            tile_overlap=self.settings.tile_overlap if options.tile_overlap is None else options.tile_overlap,
        )

    def _backend(self, precision: str | None) -> Any:
        """The backend for a precision (``None``: the model's own), opened on first use and kept."""
        if precision not in self.backends:
            from lightbsr.runtime.upscaler import Upscaler

            options: dict[str, Any] = {}
            name = choose_backend(self.settings.backend, self.model_path)
            if self.threads is not None and name == "onnxruntime":
                options["threads"] = self.threads
            elif self.threads is not None and name == "torch":
                import torch

                torch.set_num_threads(self.threads)  # this instance is a process of its own
            upscaler = Upscaler(
                self.model_path, backend=self.settings.backend, device=self.device, precision=precision, **options
            )
            self.backends[precision] = upscaler.backend
        return self.backends[precision]


def _error(err: BaseException, code: int) -> Any:
    from lightbsr.errors import one_line

    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(one_line(err), code))
