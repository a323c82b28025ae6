"""KDSR (ICLR 2023), the KDSRs-M configuration: knowledge-distilled implicit degradation estimator.

``estimate`` returns the (B, 64) IDR; ``restore(lr, idr)`` returns SR. The
per-sample dynamic depthwise convolution of the IDR-DCRB block is written as
nine shifted multiply-adds, which exports to ONNX / TensorRT with a dynamic
batch; :func:`dynamic_depthwise_conv_grouped` is the reference (grouped-conv)
form, kept for tests and as the faster training path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightbsr.models.common import MeanShift, Upsampler, check_input, conv3x3, leaky_relu

FEATURES = 64
IDR_DIM = 64
DISTILL_DIM = 256
BLOCKS = 53
ESTIMATOR_RESBLOCKS = 9


def dynamic_depthwise_conv_shifted(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-sample depthwise 3×3 conv with zero padding 1, as nine shifted multiply-adds.

    x: (B, C, H, W); kernels: (B, C, 3, 3). Exports with a dynamic batch and size.
    """
    height, width = x.shape[2], x.shape[3]
    padded = F.pad(x, (1, 1, 1, 1))
    out = padded[:, :, 0:height, 0:width] * kernels[:, :, 0:1, 0:1]
    for i in range(3):
        for j in range(3):
            if i == 0 and j == 0:
                continue
            out = out + padded[:, :, i : i + height, j : j + width] * kernels[:, :, i : i + 1, j : j + 1]
    return out


def dynamic_depthwise_conv_grouped(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """The reference form: the batch folded into channels and one grouped convolution."""
    b, c, h, w = x.shape
    out = F.conv2d(x.reshape(1, b * c, h, w), kernels.reshape(b * c, 1, 3, 3), groups=b * c, padding=1)
    return out.view(b, c, h, w)


class ResBlock(nn.Module):
    """conv3×3, LeakyReLU, conv3×3, plus input."""

    def __init__(self, dim: int = FEATURES) -> None:
        super().__init__()
        self.conv1 = conv3x3(dim, dim)
        self.conv2 = conv3x3(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(leaky_relu(self.conv1(x)))


class KDIDE(nn.Module):
    """Knowledge-distillation implicit degradation estimator.

    Returns ``(feature, idr)``: the (B, 256) feature that distillation compares
    and the (B, 64) IDR fed to the SR network.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, FEATURES, 3, padding=1)
        self.blocks = nn.Sequential(*(ResBlock() for _ in range(ESTIMATOR_RESBLOCKS)))
        self.conv1 = conv3x3(FEATURES, 128)
        self.conv2 = conv3x3(128, 128)
        self.conv3 = conv3x3(128, DISTILL_DIM)
        self.fc1 = nn.Linear(DISTILL_DIM, DISTILL_DIM)
        self.fc2 = nn.Linear(DISTILL_DIM, DISTILL_DIM)
        self.compress = nn.Linear(DISTILL_DIM, IDR_DIM)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.blocks(leaky_relu(self.head(x)))
        x = leaky_relu(self.conv3(leaky_relu(self.conv2(leaky_relu(self.conv1(x))))))
        feature = leaky_relu(self.fc2(leaky_relu(self.fc1(x.mean(dim=(2, 3))))))
        return feature, leaky_relu(self.compress(feature))


class DCRB(nn.Module):
    """IDR-DCRB: IDR-conditioned dynamic depthwise conv, LeakyReLU, conv3×3, residual."""

    def __init__(self, dim: int = FEATURES) -> None:
        super().__init__()
        self.kernel_fc1 = nn.Linear(IDR_DIM, IDR_DIM, bias=False)
        self.kernel_fc2 = nn.Linear(IDR_DIM, dim * 9, bias=False)
        self.conv = conv3x3(dim, dim)

    def forward(self, x: torch.Tensor, idr: torch.Tensor) -> torch.Tensor:
        kernels = self.kernel_fc2(leaky_relu(self.kernel_fc1(idr))).view(-1, x.shape[1], 3, 3)
        y = leaky_relu(dynamic_depthwise_conv_shifted(x, kernels))
        return x + self.conv(y)


class KDSR(nn.Module):
    """KDSRs-M student: ``sr = restore(lr, estimate(lr))``; 5,795,099 parameters at ×4."""

    def __init__(self, scale: int = 4, estimator_in_channels: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.estimator = KDIDE(estimator_in_channels)
        self.sub_mean = MeanShift(-1)
        self.head = conv3x3(3, FEATURES)
        self.blocks = nn.ModuleList(DCRB() for _ in range(BLOCKS))
        self.body_conv = conv3x3(FEATURES, FEATURES)
        self.upsampler = Upsampler(scale, FEATURES)
        self.tail = conv3x3(FEATURES, 3)
        self.add_mean = MeanShift(+1)

    def estimate_features(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LR → (distillation feature (B, 256), IDR (B, 64))."""
        check_input(lr, 3)
        return self.estimator(lr)

    def estimate(self, lr: torch.Tensor) -> torch.Tensor:
        """LR (B, 3, H, W) → IDR (B, 64)."""
        return self.estimate_features(lr)[1]

    def restore(self, lr: torch.Tensor, idr: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(lr))
        res = x
        for block in self.blocks:
            res = block(res, idr)
        res = self.body_conv(res) + x
        return self.add_mean(self.tail(self.upsampler(res)))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.restore(lr, self.estimate(lr))


class KDSRTeacher(KDSR):
    """KDSR teacher: the estimator sees ``cat(lr, pixel_unshuffle(hr, scale))``."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__(scale, 3 + 3 * scale * scale)

    def estimate_features(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        check_input(lr, 3)
        check_input(hr, 3, "hr")
        return self.estimator(torch.cat([lr, F.pixel_unshuffle(hr, self.scale)], dim=1))

    def estimate(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.estimate_features(lr, hr)[1]

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.restore(lr, self.estimate(lr, hr))
