"""Parity and accuracy of one model's output against another's, on real images.

Each side is an ONNX file (run with ONNX Runtime on the CPU) or a lightbsr checkpoint
(``.safetensors``, run in PyTorch). Both must be students of the same architecture (a
teacher needs its DRP or HR image besides the LR input).

Images: by default every image of the folder is an LR input, used as it is. With
``degrade_sigma`` the folder holds HR images and the LR input is synthesised with the papers'
benchmark protocol: HR cropped to a multiple of the scale, 21×21 isotropic Gaussian blur of
width σ, MATLAB-style bicubic ×1/scale, rounded to 8 bits (:func:`lightbsr.degradation.degrade`).

Per image, B's output is compared with A's (A is the reference):

* ``raw``: the outputs as the networks give them (not clamped): max and mean absolute error,
  PSNR with peak 1;
* ``clamped``: both clamped to [0, 1] first (what a user sees, before 8-bit rounding):
  max and mean absolute error, RGB PSNR and Y-PSNR (BT.601 luma as in the papers, ``scale``
  pixels shaved).

Overall figures: the max of the per-image maxima, the mean of the per-image means and PSNRs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lightbsr import contract
from lightbsr.checkpoint import load_checkpoint
from lightbsr.degradation import crop_to_multiple, degrade, isotropic_kernel
from lightbsr.errors import CheckpointError, ConfigError, DatasetError, InputImageError, ModelFileError
from lightbsr.evaluation import list_images, read_image_rgb8
from lightbsr.metrics import psnr_y_per_image

from .metadata import graph_inputs, load_onnx, require_lightbsr_model

__all__ = ["CompareResult", "ImageDiff", "Runner", "compare", "load_runner"]


@dataclass
class Runner:
    """One side of a comparison: ``fn`` maps a ``(1, 3, h, w)`` float32 LR array to the SR array."""

    path: Path
    kind: str  # "onnx" | "pytorch"
    arch: str
    scale: int
    precision: str
    fn: Callable[[np.ndarray], np.ndarray]

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "arch": self.arch, "precision": self.precision}


def load_runner(path: str | os.PathLike[str]) -> Runner:
    """An ONNX file (ONNX Runtime, CPU) or a lightbsr checkpoint (PyTorch, CPU) as a :class:`Runner`."""
    path = Path(path)
    from lightbsr.runtime.backend import model_kind

    if model_kind(path) == "onnxruntime":
        model = load_onnx(path)
        meta = require_lightbsr_model(model, path)
        if graph_inputs(model) != [contract.INPUT_LR] or meta.get(contract.META_GRAPH) != contract.GRAPH_FULL:
            raise ConfigError(f"{path}: compare needs a full student graph (input lr only), got {graph_inputs(model)}")
        from lightbsr.runtime import load_backend

        backend = load_backend("onnxruntime", path, device="cpu", split=False)
        return Runner(
            path,
            "onnx",
            meta[contract.META_ARCH],
            backend.scale,
            meta.get(contract.META_PRECISION, "fp32"),
            backend.forward,
        )
    torch_model, config = load_checkpoint(path)
    if config.role != "student":
        raise ConfigError(f"{path}: compare runs students only (a {config.arch} needs its DRP or HR image)")

    def forward(lr: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch_model(torch.from_numpy(lr)).numpy()

    return Runner(path, "pytorch", config.arch, config.scale, "fp32", forward)


@dataclass
class ImageDiff:
    """B against A on one image (see the module docstring)."""

    name: str
    lr_shape: tuple[int, int]
    raw_max_abs: float
    raw_mean_abs: float
    raw_psnr: float
    max_abs: float
    mean_abs: float
    psnr: float
    psnr_y: float
    seconds_a: float
    seconds_b: float


@dataclass
class CompareResult:
    a: dict[str, Any]
    b: dict[str, Any]
    images_dir: str
    degrade_sigma: float | None
    images: list[ImageDiff] = field(default_factory=list)

    @property
    def overall(self) -> dict[str, float]:
        def mean(key: str) -> float:
            values = [getattr(d, key) for d in self.images]
            return math.inf if any(math.isinf(v) for v in values) else float(np.mean(values))

        return {
            "raw_max_abs": max(d.raw_max_abs for d in self.images),
            "raw_mean_abs": mean("raw_mean_abs"),
            "raw_psnr": mean("raw_psnr"),
            "max_abs": max(d.max_abs for d in self.images),
            "mean_abs": mean("mean_abs"),
            "psnr": mean("psnr"),
            "psnr_y": mean("psnr_y"),
        }

    def to_dict(self) -> dict[str, Any]:
        return _finite(
            {
                "a": self.a,
                "b": self.b,
                "images_dir": self.images_dir,
                "lr_input": "as-is" if self.degrade_sigma is None else f"degraded HR, sigma {self.degrade_sigma}",
                "degrade_sigma": self.degrade_sigma,
                "images": [asdict(d) for d in self.images],
                "overall": self.overall,
            }
        )

    def table(self) -> str:
        """Per-image and overall figures as text."""
        head = (
            f"{'image':<24} {'LR':>9} | {'raw max':>9} {'raw mean':>9} {'raw PSNR':>8} | "
            f"{'max':>9} {'mean':>9} {'PSNR':>7} {'Y-PSNR':>7}"
        )
        rows = [
            f"A: {self.a['path']} ({self.a['kind']}, {self.a['precision']})",
            f"B: {self.b['path']} ({self.b['kind']}, {self.b['precision']})",
            "LR input: "
            + ("images as-is" if self.degrade_sigma is None else f"HR degraded, isotropic σ = {self.degrade_sigma}"),
            "raw: unclamped outputs; right: both clamped to [0, 1]; PSNR in dB (peak 1), Y-PSNR shaves the scale",
            head,
            "-" * len(head),
        ]
        for d in [*self.images, None]:
            if d is None:
                o = self.overall
                name, shape, values = "overall", "", o
            else:
                name, shape, values = d.name, f"{d.lr_shape[0]}×{d.lr_shape[1]}", asdict(d)
            rows.append(
                f"{name[:24]:<24} {shape:>9} | {values['raw_max_abs']:9.3g} {values['raw_mean_abs']:9.3g} "
                f"{values['raw_psnr']:8.2f} | {values['max_abs']:9.3g} {values['mean_abs']:9.3g} "
                f"{values['psnr']:7.2f} {values['psnr_y']:7.2f}"
            )
        return "\n".join(rows)


def _finite(value: Any) -> Any:
    """JSON has no infinity: identical outputs give PSNR "inf" as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _psnr(mse: float) -> float:
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def _diff(name: str, lr: np.ndarray, a: np.ndarray, b: np.ndarray, scale: int, ta: float, tb: float) -> ImageDiff:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    raw = np.abs(b64 - a64)
    ac, bc = np.clip(a64, 0.0, 1.0), np.clip(b64, 0.0, 1.0)
    clamped = np.abs(bc - ac)
    shave = scale if min(a.shape[-2:]) > 2 * scale else 0
    psnr_y = float(psnr_y_per_image(torch.from_numpy(bc), torch.from_numpy(ac), shave=shave)[0])
    return ImageDiff(
        name=name,
        lr_shape=(int(lr.shape[-2]), int(lr.shape[-1])),
        raw_max_abs=float(raw.max()),
        raw_mean_abs=float(raw.mean()),
        raw_psnr=_psnr(float((raw**2).mean())),
        max_abs=float(clamped.max()),
        mean_abs=float(clamped.mean()),
        psnr=_psnr(float((clamped**2).mean())),
        psnr_y=psnr_y,
        seconds_a=round(ta, 4),
        seconds_b=round(tb, 4),
    )


def compare(
    a: str | os.PathLike[str] | Runner,
    b: str | os.PathLike[str] | Runner,
    images_dir: str | os.PathLike[str],
    *,
    degrade_sigma: float | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> CompareResult:
    """Run A and B on the images of a folder and measure B against A (module docstring)."""
    runner_a = a if isinstance(a, Runner) else load_runner(a)
    runner_b = b if isinstance(b, Runner) else load_runner(b)
    if runner_a.arch != runner_b.arch:
        checkpoint = next((r for r in (runner_b, runner_a) if r.kind == "pytorch"), None)
        error = CheckpointError if checkpoint is not None else ModelFileError
        raise error(
            f"{runner_b.path} holds a {runner_b.arch} model but {runner_a.path} a {runner_a.arch}: "
            "compare needs the same architecture"
        )
    scale = runner_a.scale
    kernel = isotropic_kernel(degrade_sigma) if degrade_sigma is not None else None
    files = list_images(images_dir)[:limit] if limit else list_images(images_dir)
    result = CompareResult(runner_a.describe(), runner_b.describe(), str(images_dir), degrade_sigma)
    for path in tqdm(files, desc="compare", unit="img", disable=not progress):
        try:
            img = torch.from_numpy(read_image_rgb8(path)).permute(2, 0, 1)[None].float()
        except InputImageError as err:
            raise DatasetError(str(err)) from err
        if kernel is not None:
            hr = crop_to_multiple(img, scale)
            if min(hr.shape[-2:]) <= kernel.shape[-1] // 2:
                raise DatasetError(f"{path} is too small to degrade with a 21×21 kernel")
            img = degrade(hr, kernel, scale)
        lr = (img / 255.0).numpy().astype(np.float32)
        start = time.perf_counter()
        out_a = runner_a.fn(lr)
        mid = time.perf_counter()
        out_b = runner_b.fn(lr)
        end = time.perf_counter()
        for runner, out in ((runner_a, out_a), (runner_b, out_b)):
            contract.check_sr(runner.path, lr.shape, out.shape, scale, bool(np.isfinite(out).all()))
        result.images.append(_diff(path.name, lr, out_a, out_b, scale, mid - start, end - mid))
    return result
