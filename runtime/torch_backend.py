"""The reference backend: the PyTorch model itself, on CPU or CUDA.

Runs a lightbsr checkpoint (``.safetensors``, loaded with
:func:`lightbsr.checkpoint.load_checkpoint`) or a model object in float32, or under
``torch.autocast`` for ``fp16``/``bf16`` (weights stay float32; autocast keeps the
precision-sensitive ops — LayerNorm, softmax, reductions — in float32). Autocast is
used on the CPU as well: casting the whole network to float16 there runs an order of
magnitude slower than float32 with torch 2.13. Only student models run here: a
teacher needs the true degradation (a DRP or the HR image), which an upscaler does
not have.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightbsr.contract import idr_names
from lightbsr.errors import BackendUnavailableError, ConfigError
from lightbsr.hardware import torch_threads
from lightbsr.models import KDSR, KDSRTeacher, LightBSR, LightBSRTeacher
from lightbsr.runtime.backend import IDR, Backend, Workload

_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
ESTIMATE_MARGIN = 16
"""Context (LR pixels, a multiple of 4) around each tile of a tiled LightBSR estimate: ≥ its receptive radius, 11."""
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate")


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; a CUDA device that is not there is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError("CUDA was asked for, but this torch build sees no CUDA device")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise BackendUnavailableError(f"no CUDA device {resolved.index} ({torch.cuda.device_count()} present)")
    elif resolved.type != "cpu":
        raise ConfigError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or auto")
    return resolved


def model_family(model: nn.Module) -> str:
    """``"lightbsr"`` or ``"kdsr"`` for a student model; teachers and other modules are refused."""
    if isinstance(model, (LightBSRTeacher, KDSRTeacher)):
        raise ConfigError(
            f"{type(model).__name__} is a teacher model: it needs the true degradation; upscale with a student"
        )
    if isinstance(model, LightBSR):
        return "lightbsr"
    if isinstance(model, KDSR):
        return "kdsr"
    raise ConfigError(f"{type(model).__name__} is not a LightBSR or KDSR student model")


class TorchBackend(Backend):
    """A LightBSR/KDSR student on a torch device."""

    name = "torch"

    def __init__(
        self, model: nn.Module, *, device: str = "auto", precision: str | None = None, threads: int | None = None
    ) -> None:
        self.family = model_family(model)
        self.scale = int(getattr(model, "scale", 4))
        self.precision = precision or "fp32"
        if self.precision not in ("fp32", *_AUTOCAST_DTYPES):
            raise ConfigError(f"unknown precision {self.precision!r}; choose from fp32, fp16, bf16")
        self._device = resolve_device(device)
        self.device = str(self._device)
        self.threads = torch_threads(threads)  # torch's pool is process-wide: capped to the usable CPUs
        self.model: Any = model.to(self._device).eval()  # a LightBSR or KDSR (estimate/restore)
        self._idr_names = idr_names(self.family)

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        with torch.inference_mode():
            if self.precision == "fp32":
                yield
            else:
                with torch.autocast(self._device.type, dtype=_AUTOCAST_DTYPES[self.precision]):
                    yield

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self._device)

    @staticmethod
    def _numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().float().cpu().numpy()

    def estimate(self, lr: np.ndarray) -> IDR:
        with self._context():
            idr = self.model.estimate(self._tensor(lr))
        tensors = idr if isinstance(idr, tuple) else (idr,)
        return {name: self._numpy(t) for name, t in zip(self._idr_names, tensors, strict=True)}

    def restore(self, lr: np.ndarray, idr: IDR) -> np.ndarray:
        tensors = tuple(self._tensor(idr[name]) for name in self._idr_names)
        with self._context():
            sr = self.model.restore(self._tensor(lr), tensors if len(tensors) > 1 else tensors[0])
        return self._numpy(sr)

    def forward(self, lr: np.ndarray) -> np.ndarray:
        with self._context():
            return self._numpy(self.model(self._tensor(lr)))

    @property
    def can_estimate_in_tiles(self) -> bool:
        return self.family == "lightbsr"

    def estimate_in_tiles(self, lr: np.ndarray, tile: int) -> IDR:
        """LightBSR's IDR computed tile by tile; equal to :meth:`estimate` up to float rounding.

        The estimator is six local conv-BN-LeakyReLU layers (two of stride 2) whose
        receptive field reaches 11 LR pixels, followed by the converter (a global mean of
        the features, and a 3×3 conv at LR resolution). Its (N, 128, ⌈H/4⌉, ⌈W/4⌉) features
        are computed on tiles whose origins are multiples of 4, each with
        :data:`ESTIMATE_MARGIN` pixels of context that are cut off again, so every kept
        feature sees exactly the pixels (and the image border) it sees in the whole image;
        the converter then runs on the assembled features, whose memory is ~1/30 of the
        estimator's peak. Only LightBSR: KDSR's estimator has no such split.
        """
        if not self.can_estimate_in_tiles:
            return super().estimate_in_tiles(lr, tile)
        step = max(4, tile // 4 * 4)
        margin = ESTIMATE_MARGIN
        batch, _, height, width = lr.shape
        with self._context():
            image = self._tensor(lr)
            features = None
            for y in range(0, height, step):
                for x in range(0, width, step):
                    top, left = max(0, y - margin), max(0, x - margin)
                    crop = image[:, :, top : min(height, y + step + margin), left : min(width, x + step + margin)]
                    part = self.model.estimator(crop)
                    if features is None:
                        shape = (batch, part.shape[1], -(-height // 4), -(-width // 4))
                        features = part.new_zeros(shape)
                    rows = slice(y // 4, -(-min(y + step, height) // 4))
                    cols = slice(x // 4, -(-min(x + step, width) // 4))
                    first_row, first_col = (y - top) // 4, (x - left) // 4
                    features[:, :, rows, cols] = part[
                        :,
                        :,
                        first_row : first_row + rows.stop - rows.start,
                        first_col : first_col + cols.stop - cols.start,
                    ]
            channel, spatial = self.model.converter(features, height, width)
        return {name: self._numpy(t) for name, t in zip(self._idr_names, (channel, spatial), strict=True)}

    @property
    def can_restore_in_tiles(self) -> bool:
        return self.family == "lightbsr"

    def restore_in_tiles(
        self, lr: np.ndarray, idr: IDR, tile: int, progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """LightBSR's :meth:`~lightbsr.models.LightBSR.restore_in_tiles`: exact, stage by stage."""
        if not self.can_restore_in_tiles:
            return super().restore_in_tiles(lr, idr, tile, progress)
        tensors = tuple(self._tensor(idr[name]) for name in self._idr_names)
        with self._context():
            sr = self.model.restore_in_tiles(self._tensor(lr), tensors, tile, progress)
        return self._numpy(sr)

    def free_memory(self) -> int | None:
        if self._device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self._device)
            # memory the caching allocator holds but does not use is free to us as well
            cached = torch.cuda.memory_reserved(self._device) - torch.cuda.memory_allocated(self._device)
            return int(free + cached)
        return super().free_memory()

    def is_out_of_memory(self, err: BaseException) -> bool:
        if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
            return True
        return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in _OOM_MESSAGES)

    def release_memory(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self._device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(self._device)
        return info


def load(
    model: str | os.PathLike[str] | nn.Module,
    *,
    device: str = "auto",
    precision: str | None = None,
    workload: Workload | None = None,
    threads: int | None = None,
    **options: Any,
) -> TorchBackend:
    """A torch backend for a lightbsr checkpoint file (or a model object); any ``workload`` runs as it is.

    ``threads``: torch's intra-op threads (process-wide; default: at most the usable CPUs,
    :func:`lightbsr.hardware.torch_threads`).
    """
    if options:
        raise ConfigError(f"the torch backend takes no option(s) {', '.join(sorted(options))}; known: threads")
    if isinstance(model, nn.Module):
        return TorchBackend(model, device=device, precision=precision, threads=threads)
    from lightbsr.checkpoint import load_checkpoint

    path = Path(model)
    module, config = load_checkpoint(path)
    if config.role != "student":
        raise ConfigError(f"{path}: {config.arch} is a teacher model: it needs the true degradation; use a student")
    return TorchBackend(module, device=device, precision=precision, threads=threads)
