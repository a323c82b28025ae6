"""Cheap periodic validation: Y-PSNR on a few benchmark images at one fixed degradation.

The papers' protocol (:mod:`lightbsr.evaluation`) on a budget: the first
``max_images`` images of a folder, each centre-cropped to at most ``patch`` pixels
(a multiple of the scale), degraded once with a fixed kernel — setting 1: isotropic
σ = 2.4 (the middle column of Table 3); setting 2: an anisotropic kernel (λ1 = 3, λ2 = 1.5,
θ = π/4) and noise σ = 5 drawn from a fixed seed (a validation choice, not a figure of
the papers) — LR rounded to 8 bits, SR clamped and rounded to 8 bits, Y-PSNR with a
``scale``-pixel shave, averaged over the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from lightbsr.degradation import anisotropic_kernel, crop_to_multiple, degrade, isotropic_kernel
from lightbsr.errors import DatasetError, InputImageError
from lightbsr.evaluation import list_images, read_image_rgb8
from lightbsr.metrics import psnr_y_per_image

from .objectives import Objective

__all__ = ["VALIDATION_DEGRADATIONS", "ValidationDegradation", "Validator"]


@dataclass(frozen=True)
class ValidationDegradation:
    """The fixed degradation of validation images."""

    description: str
    kernel: torch.Tensor
    noise: float | None


VALIDATION_DEGRADATIONS = {
    1: ValidationDegradation("isotropic σ=2.4", isotropic_kernel(2.4), None),
    2: ValidationDegradation("anisotropic λ=(3.0,1.5) θ=π/4, noise 5", anisotropic_kernel(3.0, 1.5, math.pi / 4), 5.0),
}


class Validator:
    """Y-PSNR of an objective's model on a few fixed, pre-degraded validation crops."""

    def __init__(
        self,
        folder: str | Path,
        setting: int,
        scale: int,
        device: torch.device,
        max_images: int = 5,
        patch: int = 256,
    ) -> None:
        self.scale = scale
        self.degradation = VALIDATION_DEGRADATIONS[setting]
        files = list_images(folder)[:max_images]
        generator = torch.Generator().manual_seed(0)
        self.names = [p.name for p in files]
        self.items: list[tuple[torch.Tensor, torch.Tensor]] = []
        for path in files:
            try:
                img = read_image_rgb8(path)
            except InputImageError as exc:
                raise DatasetError(str(exc)) from exc
            hr = torch.from_numpy(img).permute(2, 0, 1)[None].float()
            hr = crop_to_multiple(_centre_crop(hr, patch), scale)
            if min(hr.shape[-2:]) <= 2 * scale + 10:
                raise DatasetError(f"validation image {path} is too small ({tuple(hr.shape[-2:])})")
            noise = None if self.degradation.noise is None else torch.tensor([self.degradation.noise])
            lr = degrade(hr, self.degradation.kernel, scale, noise, generator)
            self.items.append(((lr / 255.0).to(device), (hr / 255.0).to(device)))
        self.kernel = self.degradation.kernel[None].to(device)
        self.noise = None if self.degradation.noise is None else torch.tensor([self.degradation.noise], device=device)

    def __len__(self) -> int:
        return len(self.items)

    @torch.no_grad()
    def __call__(self, objective: Objective) -> float:
        """Mean Y-PSNR (dB) of ``objective.predict`` over the validation crops, in float32 and eval mode."""
        was_training = objective.training
        objective.eval()
        try:
            scores = []
            for lr, hr in self.items:
                sr = objective.predict(lr, hr, self.kernel, self.noise).float()
                sr = sr.clamp(0.0, 1.0).mul(255.0).round().div(255.0)
                scores.append(float(psnr_y_per_image(sr, hr, shave=self.scale)[0]))
        finally:
            objective.train(was_training)
        return sum(scores) / len(scores)


def _centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    ch, cw = min(h, size), min(w, size)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[..., top : top + ch, left : left + cw]
