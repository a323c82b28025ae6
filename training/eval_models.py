"""Models for ``lightbsr eval``: checkpoints (PyTorch), ONNX files (ONNX Runtime, CPU), bicubic, the bundled model.

:func:`load_eval_model` turns the ``MODEL`` argument into an :class:`EvalModel`, and
:func:`evaluate_model` runs the papers' protocol (:func:`lightbsr.evaluation.evaluate`)
with it. A LightBSR *teacher* checkpoint is evaluated with the true degradation prior of
each kernel width (an oracle, useful to check a teacher run); a KDSR teacher needs the
HR image and cannot be evaluated this way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightbsr.contract import INPUT_LR, META_SCALE, OUTPUT_SR, parse_scale
from lightbsr.degradation import isotropic_kernel
from lightbsr.errors import ConfigError, ModelFileError
from lightbsr.evaluation import EvalResult, UpscaleFn, bicubic_upscale, evaluate

__all__ = ["EvalModel", "evaluate_model", "load_eval_model", "summary"]

BUILTIN = ("bicubic", "default")


@dataclass
class EvalModel:
    """An upscaler for the benchmark protocol; ``for_sigma(σ)`` gives the function used at kernel width σ."""

    name: str
    kind: str  # "bicubic" | "checkpoint" | "onnx"
    for_sigma: Callable[[float], UpscaleFn]
    sigma_independent: bool = True


def load_eval_model(
    spec: str,
    scale: int,
    setting: int,
    device: torch.device,
    *,
    backend: str = "onnxruntime",
    precision: str | None = None,
) -> EvalModel:
    """``bicubic``, ``default`` (the bundled model), a lightbsr checkpoint, or an ONNX file (lr → sr).

    ``backend`` runs an ONNX file: ``onnxruntime`` (any graph lr → sr), or ``openvino`` (a lightbsr export,
    in ``precision`` ``None``/``"fp32"`` or ``"bf16"``). ``precision`` is for ``openvino`` only.
    """
    if backend not in ("onnxruntime", "openvino"):
        raise ConfigError(f"unknown eval backend {backend!r}; choose from onnxruntime, openvino")
    if precision is not None and backend != "openvino":
        raise ConfigError("--bf16 is for --backend openvino")
    if backend == "openvino" and Path(spec).suffix.lower() != ".onnx":  # not bicubic, default or a checkpoint
        raise ConfigError(f"--backend openvino runs ONNX files; {spec} is not one")
    if spec == "bicubic":
        fn = bicubic_upscale(scale)
        return EvalModel("Bicubic", "bicubic", lambda sigma: fn)
    if spec == "default":
        from lightbsr.weights import default_checkpoint

        return _checkpoint_model(default_checkpoint(setting), scale, device, "default")
    path = Path(spec)
    if not path.is_file():
        raise ModelFileError(
            f"{spec}: no such model file (expected a .safetensors checkpoint, an .onnx file, 'bicubic' or 'default')"
        )
    from lightbsr.runtime.backend import model_kind

    if model_kind(path) == "onnxruntime":
        return _openvino_model(path, scale, precision) if backend == "openvino" else _onnx_model(path, scale)
    return _checkpoint_model(path, scale, device, spec)


def _openvino_model(path: Path, scale: int, precision: str | None) -> EvalModel:
    """A lightbsr ONNX export on the runtime's openvino backend (the full graph, else the split pair)."""
    from lightbsr.runtime.backend import load_backend

    backend = load_backend("openvino", path, precision=precision, device="cpu")
    if backend.scale != scale:
        raise ConfigError(f"{path} is a ×{backend.scale} model; pass --scale {backend.scale}")

    def upscale(lr: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(backend.forward(lr.detach().cpu().numpy().astype(np.float32)))

    return EvalModel(f"{path} (openvino {backend.describe()['inference_precision']})", "onnx", lambda sigma: upscale)


def _checkpoint_model(path: Path, scale: int, device: torch.device, name: str) -> EvalModel:
    from lightbsr.checkpoint import load_checkpoint
    from lightbsr.models import LightBSRTeacher

    model, config = load_checkpoint(path, device)
    if config.scale != scale:
        raise ConfigError(f"{path} is a ×{config.scale} model; pass --scale {config.scale}")
    if config.role == "student":
        return EvalModel(name, "checkpoint", lambda sigma: model)
    if isinstance(model, LightBSRTeacher):

        def teacher_at(sigma: float) -> UpscaleFn:
            kernel = isotropic_kernel(sigma)[None].to(device)
            noise = torch.zeros(1, device=device) if model.setting == 2 else None
            drp = model.drp(kernel, noise)
            return lambda lr: model(lr, drp)

        return EvalModel(f"{name} (true DRP)", "checkpoint", teacher_at, sigma_independent=False)
    raise ConfigError(f"{path} is a {config.arch}: a KDSR teacher needs the HR image; evaluate its student")


def _onnx_model(path: Path, scale: int) -> EvalModel:
    """A full graph (lr → sr, any ONNX with those tensors) on ONNX Runtime's CPU provider.

    Opened with the runtime's one session factory (:func:`lightbsr.runtime.onnxruntime_backend.session`):
    unlike ``lightbsr upscale``, eval also takes ONNX models that lightbsr did not export.
    """
    from lightbsr.runtime.onnxruntime_backend import run, session

    model = session(path)
    inputs = {i.name: i for i in model.get_inputs()}
    outputs = {o.name for o in model.get_outputs()}
    if set(inputs) != {INPUT_LR} or OUTPUT_SR not in outputs:
        raise ModelFileError(
            f"{path}: expected a full graph with input {INPUT_LR!r} and output {OUTPUT_SR!r}, "
            f"got inputs {sorted(inputs)} and outputs {sorted(outputs)}"
        )
    meta = model.get_modelmeta().custom_metadata_map or {}
    if meta.get(META_SCALE):
        try:
            declared = parse_scale(meta[META_SCALE])
        except ConfigError as err:
            raise ModelFileError(f"{path}: bad {META_SCALE} metadata: {err}") from None
        if declared != scale:
            raise ConfigError(f"{path} is a ×{declared} model; pass --scale {declared}")
    dtype = np.float16 if inputs[INPUT_LR].type == "tensor(float16)" else np.float32

    def upscale(lr: torch.Tensor) -> torch.Tensor:
        (sr,) = run(model, {INPUT_LR: lr.detach().cpu().numpy().astype(dtype)}, [OUTPUT_SR])
        return torch.from_numpy(sr)

    return EvalModel(str(path), "onnx", lambda sigma: upscale)


def evaluate_model(
    model: EvalModel,
    dataset: str | Path,
    scale: int,
    sigmas: Sequence[float],
    setting: int,
    device: torch.device,
    progress: bool = True,
) -> EvalResult:
    """The papers' protocol on one dataset folder (one pass per σ for σ-dependent models)."""
    if model.sigma_independent:
        return evaluate(
            model.for_sigma(sigmas[0]),
            dataset,
            scale=scale,
            sigmas=sigmas,
            setting=setting,
            progress=progress,
            method=model.name,
            device=device,
        )
    parts = [
        evaluate(model.for_sigma(s), dataset, scale, [s], setting, progress, model.name, device)
        for s in dict.fromkeys(float(s) for s in sigmas)
    ]
    first = parts[0]
    return EvalResult(
        method=first.method,
        dataset=first.dataset,
        scale=scale,
        setting=setting,
        sigmas=tuple(p.sigmas[0] for p in parts),
        scores={p.sigmas[0]: p.scores[p.sigmas[0]] for p in parts},
    )


def summary(spec: str, model: EvalModel, results: Sequence[EvalResult], paths: Sequence[str]) -> dict[str, Any]:
    """The ``--json`` document: mean Y-PSNR/SSIM per kernel width for every dataset."""
    first = results[0]
    return {
        "schema": "lightbsr.eval-summary/1",
        "model": spec,
        "method": model.name,
        "scale": first.scale,
        "setting": first.setting,
        "sigmas": list(first.sigmas),
        "datasets": [
            {"name": r.dataset, "path": str(p), "images": len(r.images), "mean": r.to_dict()["mean"]}
            for r, p in zip(results, paths, strict=True)
        ],
    }
