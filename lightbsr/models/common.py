"""Building blocks shared by LightBSR and KDSR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightbsr.contract import SCALES
from lightbsr.errors import ConfigError

#: RGB mean (DIV2K) subtracted at the input and added back at the output.
RGB_MEAN = (0.4488, 0.4371, 0.4040)

SUPPORTED_SCALES = SCALES  # lightbsr.contract.SCALES: one list of scales


def conv3x3(in_channels: int, out_channels: int, *, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


class MeanShift(nn.Conv2d):
    """Frozen 1×1 conv that adds ``sign × RGB_MEAN`` (identity weight).

    Kept as a (frozen) convolution, as in the reference code, so that the
    parameter count matches the published figure exactly.
    """

    def __init__(self, sign: int) -> None:
        super().__init__(3, 3, 1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * torch.tensor(RGB_MEAN))
        self.requires_grad_(False)


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler.

    ×2 and ×4: one or two [conv 64→256, PixelShuffle(2)]; ×3: [conv 64→576, PixelShuffle(3)].
    """

    def __init__(self, scale: int, channels: int) -> None:
        if scale not in SUPPORTED_SCALES:
            raise ConfigError(f"unsupported scale ×{scale}; supported: {SUPPORTED_SCALES}")
        layers: list[nn.Module] = []
        if scale == 3:
            layers += [conv3x3(channels, 9 * channels), nn.PixelShuffle(3)]
        else:
            for _ in range({2: 1, 4: 2}[scale]):
                layers += [conv3x3(channels, 4 * channels), nn.PixelShuffle(2)]
        super().__init__(*layers)


def check_input(lr: torch.Tensor, channels: int, name: str = "lr") -> None:
    """Raise a clear error for inputs that are not (B, channels, H, W)."""
    if lr.ndim != 4 or lr.shape[1] != channels:
        raise ConfigError(f"{name} must be a (B, {channels}, H, W) tensor, got shape {tuple(lr.shape)}")
