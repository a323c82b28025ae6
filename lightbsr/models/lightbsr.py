"""LightBSR (ICCV 2025): implicit-degradation-guided lightweight blind SR.

Read top to bottom: estimator → converter → adaptation blocks/groups → the
student and teacher networks. ``estimate`` returns the implicit degradation
representation (IDR) ``(channel_idr, spatial_idr)``; ``restore(lr, idr)``
returns the SR image; ``forward`` composes them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lightbsr.models.common import MeanShift, Upsampler, check_input, conv3x3, leaky_relu

IDR = tuple[torch.Tensor, torch.Tensor]
"""(channel_idr (B, 48), spatial_idr (B, 8, H, W))."""

FEATURES = 64
CHANNEL_IDR = 48
SPATIAL_IDR = 8
ESTIMATOR_FEATURES = 128
GROUPS = 8
BLOCKS_PER_GROUP = 8


# --------------------------------------------------------------------------- estimator


class ConvBNAct(nn.Module):
    """conv3×3 → BatchNorm2d → LeakyReLU(0.1)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return leaky_relu(self.bn(self.conv(x)))


class IDREstimator(nn.Module):
    """Six conv-BN-LeakyReLU layers: in→32→32→64(/2)→64→128(/2)→128.

    Output: (B, 128, ⌈H/4⌉, ⌈W/4⌉) features (the "original IDR").
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        plan = [(in_channels, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)]
        self.layers = nn.Sequential(*(ConvBNAct(cin, cout, stride) for cin, cout, stride in plan))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class IDRConverter(nn.Module):
    """Estimator features → channel IDR (GAP, FC, GELU) and spatial IDR (PixelShuffle(4), crop, conv, GELU)."""

    def __init__(self) -> None:
        super().__init__()
        self.channel = nn.Linear(ESTIMATOR_FEATURES, CHANNEL_IDR, bias=False)
        self.spatial = conv3x3(SPATIAL_IDR, SPATIAL_IDR)

    def forward(self, features: torch.Tensor, height: int, width: int) -> IDR:
        channel_idr = F.gelu(self.channel(features.mean(dim=(2, 3))))
        # PixelShuffle gives 4⌈H/4⌉ × 4⌈W/4⌉; the reference "reflect-pads" by a
        # negative amount, which is a crop to the top-left H × W.
        spatial = F.pixel_shuffle(features, 4)[:, :, :height, :width]
        spatial_idr = F.gelu(self.spatial(spatial))
        return channel_idr, spatial_idr


# --------------------------------------------------------------------------- adaptation


class IDRCorrection(nn.Module):
    """Residual two-layer refinement of both IDRs (IDR-CB)."""

    def __init__(self) -> None:
        super().__init__()
        self.channel_fc1 = nn.Linear(CHANNEL_IDR, 2 * CHANNEL_IDR)
        self.channel_fc2 = nn.Linear(2 * CHANNEL_IDR, CHANNEL_IDR)
        self.spatial_conv1 = conv3x3(SPATIAL_IDR, 2 * SPATIAL_IDR)
        self.spatial_conv2 = conv3x3(2 * SPATIAL_IDR, SPATIAL_IDR)

    def forward(self, channel_idr: torch.Tensor, spatial_idr: torch.Tensor) -> IDR:
        channel_idr = channel_idr + F.gelu(self.channel_fc2(F.gelu(self.channel_fc1(channel_idr))))
        spatial_idr = spatial_idr + F.gelu(self.spatial_conv2(F.gelu(self.spatial_conv1(spatial_idr))))
        return channel_idr, spatial_idr


class InvertedBottleneck(nn.Module):
    """The ConvNeXt tail shared by both block kinds: dw7×7, LN, 64→128, GELU, 128→64, layer scale."""

    def __init__(self, dim: int = FEATURES) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 2 * dim)
        self.pwconv2 = nn.Linear(2 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtBlock(InvertedBottleneck):
    """ConvNeXt block: ``x + InvertedBottleneck(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


class AdaptationBlock(nn.Module):
    """IDR-AB: modulate a 1:3 channel split by the spatial and channel IDRs, then a ConvNeXt-style mix."""

    def __init__(self, dim: int = FEATURES) -> None:
        super().__init__()
        self.split = dim // 4
        rest = dim - self.split
        # spatial branch on the first quarter of the channels
        self.spatial_attn1 = nn.Conv2d(self.split + SPATIAL_IDR, self.split, 1, bias=False)
        self.spatial_attn2 = conv3x3(self.split, self.split, bias=False)
        self.spatial_fuse = nn.Conv2d(self.split, self.split, 5, padding=2, bias=False)
        # channel branch on the remaining three quarters
        self.channel_attn1 = nn.Linear(rest + CHANNEL_IDR, rest // 2, bias=False)
        self.channel_attn2 = nn.Linear(rest // 2, rest, bias=False)
        self.mix = InvertedBottleneck(dim)

    def channel_weight(self, x: torch.Tensor, channel_idr: torch.Tensor) -> torch.Tensor:
        """The channel attention's (B, 48) gates: from the last 48 channels of ``x`` averaged over the whole input."""
        pooled = torch.cat([x[:, self.split :].mean(dim=(2, 3)), channel_idr], dim=1)
        return torch.sigmoid(self.channel_attn2(F.gelu(self.channel_attn1(pooled))))

    def local(self, x: torch.Tensor, channel_weight: torch.Tensor, spatial_idr: torch.Tensor) -> torch.Tensor:
        """The block given its channel gates: local ops only, reaching :data:`BLOCK_HALO` pixels."""
        x1, x2 = x[:, : self.split], x[:, self.split :]
        attn = self.spatial_attn2(F.gelu(self.spatial_attn1(torch.cat([spatial_idr, x1], dim=1))))
        x1 = self.spatial_fuse(x1 * torch.sigmoid(attn))
        x2 = x2 * channel_weight[:, :, None, None]
        return x + self.mix(F.gelu(torch.cat([x1, x2], dim=1)))

    def forward(self, x: torch.Tensor, channel_idr: torch.Tensor, spatial_idr: torch.Tensor) -> torch.Tensor:
        return self.local(x, self.channel_weight(x, channel_idr), spatial_idr)


class AdaptationGroup(nn.Module):
    """IDR-AG: correct the IDRs, 8 adaptation blocks, a ConvNeXt block and a conv, with a residual."""

    def __init__(self, dim: int = FEATURES, blocks: int = BLOCKS_PER_GROUP) -> None:
        super().__init__()
        self.correction = IDRCorrection()
        self.blocks = nn.ModuleList(AdaptationBlock(dim) for _ in range(blocks))
        self.convnext = ConvNeXtBlock(dim)
        self.conv = conv3x3(dim, dim)

    def forward(
        self, x: torch.Tensor, channel_idr: torch.Tensor, spatial_idr: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        channel_idr, spatial_idr = self.correction(channel_idr, spatial_idr)
        y = x
        for block in self.blocks:
            y = block(y, channel_idr, spatial_idr)
        return self.tail(y, x), channel_idr, spatial_idr

    def tail(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """After the blocks: ConvNeXt block, conv and the group's residual (reaches :data:`GROUP_TAIL_HALO` pixels)."""
        return self.conv(self.convnext(y)) + x


# --------------------------------------------------------------------------- networks


class LightBSR(nn.Module):
    """LightBSR student: ``sr = restore(lr, estimate(lr))``; 3,259,971 parameters at ×4.

    Input ``lr`` is (B, 3, H, W) RGB in [0, 1]; output is (B, 3, sH, sW), not clamped.
    """

    def __init__(self, scale: int = 4, estimator_in_channels: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.estimator = IDREstimator(estimator_in_channels)
        self.converter = IDRConverter()
        self.sub_mean = MeanShift(-1)
        self.head = conv3x3(3, FEATURES)
        self.groups = nn.ModuleList(AdaptationGroup() for _ in range(GROUPS))
        self.body_conv = conv3x3(FEATURES, FEATURES)
        self.upsampler = Upsampler(scale, FEATURES)
        self.tail = conv3x3(FEATURES, 3)
        self.add_mean = MeanShift(+1)

    def estimate(self, lr: torch.Tensor) -> IDR:
        """LR (B, 3, H, W) → (channel IDR (B, 48), spatial IDR (B, 8, H, W))."""
        check_input(lr, 3)
        return self.converter(self.estimator(lr), lr.shape[2], lr.shape[3])

    def restore(self, lr: torch.Tensor, idr: IDR) -> torch.Tensor:
        """LR (B, 3, H, W) and its IDR → SR (B, 3, sH, sW)."""
        channel_idr, spatial_idr = idr
        x = self.head(self.sub_mean(lr))
        res = x
        for group in self.groups:
            res, channel_idr, spatial_idr = group(res, channel_idr, spatial_idr)
        res = self.body_conv(res) + x
        return self.add_mean(self.tail(self.upsampler(res)))

    def restore_in_tiles(
        self, lr: torch.Tensor, idr: IDR, tile: int, progress: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        """:meth:`restore`, computed tile by tile with bounded memory — equal to it up to float rounding.

        A tile cannot simply be restored on its own: every adaptation block gates its
        channels with an average over the whole input (its channel attention), which a
        tile only sees a part of. Here the network is run one stage at a time — each of
        the 64 adaptation blocks, each group's tail, the body conv, the upsampler — and
        only the stage's local work is tiled: a block's channel gates are computed from
        the whole LR-resolution feature map (64 channels, kept whole between stages), then
        its convolutions run on ``tile`` × ``tile`` pieces with enough context around them
        (the stage's receptive radius) that every kept pixel is exact. Memory: a few
        64-channel maps at LR resolution plus one tile's work, instead of the whole
        network's activations (the ×4 upsampler's alone are 16× larger).
        ``progress(done, total)`` is called after each tile of each stage.
        """
        channel_idr, spatial_idr = idr
        stages = sum(len(group.blocks) + 1 for group in self.groups) + 2
        counter = _TileCounter(lr.shape[2], lr.shape[3], tile, stages, progress)
        x = self.head(self.sub_mean(lr))
        res = x
        for group in self.groups:
            channel_idr, spatial_idr = group.correction(channel_idr, spatial_idr)
            y = res
            for block in group.blocks:
                weight = block.channel_weight(y, channel_idr)
                y = _apply_in_tiles(
                    lambda t, s, b=block, w=weight: b.local(t, w, s), (y, spatial_idr), tile, BLOCK_HALO, counter
                )
            res = _apply_in_tiles(group.tail, (y, res), tile, GROUP_TAIL_HALO, counter)
        res = _apply_in_tiles(lambda r, s: self.body_conv(r) + s, (res, x), tile, 1, counter)
        return _apply_in_tiles(
            lambda r: self.add_mean(self.tail(self.upsampler(r))), (res,), tile, UPSAMPLE_HALO, counter, self.scale
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.restore(lr, self.estimate(lr))


BLOCK_HALO = 6
"""Receptive radius of an adaptation block's local part (LR pixels): 3×3 + 5×5 convs on the spatial branch, 7×7 dw."""
GROUP_TAIL_HALO = 4
"""Of a group's tail: the ConvNeXt block's 7×7 dw conv and a 3×3 conv."""
UPSAMPLE_HALO = 2
"""Of the upsampler and tail in LR pixels: a 3×3 conv at LR, then 3×3 convs at 2× (or 3×) and at the output scale."""


class _TileCounter:
    """Counts tiles over the stages of :meth:`LightBSR.restore_in_tiles` for a progress callback."""

    def __init__(
        self, height: int, width: int, tile: int, stages: int, progress: Callable[[int, int], None] | None
    ) -> None:
        self.total = stages * -(-height // tile) * -(-width // tile)
        self.done = 0
        self.progress = progress

    def step(self) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total)


def _apply_in_tiles(
    stage: Callable[..., torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    tile: int,
    halo: int,
    counter: _TileCounter,
    scale: int = 1,
) -> torch.Tensor:
    """``stage(*inputs)`` over ``tile``-sized pieces of same-size (B, C, H, W) inputs, each with ``halo`` context.

    ``stage`` must be local with a receptive radius ≤ ``halo`` (the zero padding at a
    cut edge then only spoils the context that is cut off again) and may upscale by
    ``scale``. The image border is the image's own, so padding there is as in one piece.
    """
    batch, _, height, width = inputs[0].shape
    out: torch.Tensor | None = None
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            y0, x0 = max(0, top - halo), max(0, left - halo)
            y1, x1 = min(height, bottom + halo), min(width, right + halo)
            part = stage(*(t[:, :, y0:y1, x0:x1] for t in inputs))
            if out is None:
                out = part.new_empty((batch, part.shape[1], height * scale, width * scale))
            out[:, :, top * scale : bottom * scale, left * scale : right * scale] = part[
                :, :, (top - y0) * scale : (bottom - y0) * scale, (left - x0) * scale : (right - x0) * scale
            ]
            counter.step()
    assert out is not None
    return out


class Projector(nn.Sequential):
    """Contrastive projector: GAP → Linear 128→128 → LeakyReLU → Linear 128→128."""

    def __init__(self, dim: int = ESTIMATOR_FEATURES) -> None:
        super().__init__(nn.Linear(dim, dim), nn.LeakyReLU(0.1), nn.Linear(dim, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(features.mean(dim=(2, 3)))


class LightBSRTeacher(LightBSR):
    """LightBSR teacher: the estimator also sees the degradation reference prior (DRP).

    ``drp`` is (B, drp_channels) or its spatially constant map (B, drp_channels, H, W):
    15 PCA coefficients of the blur kernel (setting 1), plus the noise level
    (0–255 units) three times (setting 2). ``pca_basis`` (15, k·k) is saved with
    the checkpoint, so that a DRP can be computed from a kernel with :meth:`drp`.
    The momentum (key) estimator, its projector and the negative queue are used
    only by contrastive training.
    """

    PCA_DIM = 15

    def __init__(self, scale: int = 4, setting: int = 1, kernel_size: int = 21, queue_size: int = 8192) -> None:
        drp_channels = self.PCA_DIM + (3 if setting == 2 else 0)
        super().__init__(scale, 3 + drp_channels)
        self.setting = setting
        self.drp_channels = drp_channels
        self.projector = Projector()
        self.key_estimator = IDREstimator(3 + drp_channels)
        self.key_projector = Projector()
        self.key_estimator.requires_grad_(False)
        self.key_projector.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(ESTIMATOR_FEATURES, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("pca_basis", torch.zeros(self.PCA_DIM, kernel_size * kernel_size))

    def drp(self, kernel: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Kernels (B, k, k) [and noise σ (B,) in 0–255 units] → DRP vectors (B, drp_channels)."""
        codes = kernel.flatten(1) @ self.pca_basis.t()
        if self.setting == 2:
            if noise is None:
                raise ValueError("setting 2 DRP needs the noise level")
            codes = torch.cat([codes, noise.view(-1, 1).expand(-1, 3).to(codes)], dim=1)
        return codes

    def estimator_input(self, lr: torch.Tensor, drp: torch.Tensor) -> torch.Tensor:
        check_input(lr, 3)
        if drp.ndim == 2:
            drp = drp[:, :, None, None].expand(-1, -1, lr.shape[2], lr.shape[3])
        check_input(drp, self.drp_channels, "drp")
        return torch.cat([lr, drp], dim=1)

    def estimate(self, lr: torch.Tensor, drp: torch.Tensor) -> IDR:  # type: ignore[override]
        features = self.estimator(self.estimator_input(lr, drp))
        return self.converter(features, lr.shape[2], lr.shape[3])

    def forward(self, lr: torch.Tensor, drp: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.restore(lr, self.estimate(lr, drp))
