"""The ProGAN discriminator (CelebA-HQ configuration by default), run at the input's resolution.

Structure (state_dict names in brackets map to the paper's layers); no normalisation anywhere in D:
- fromRGB per resolution [fromrgb.RxR]: 1x1 conv + lrelu.
- R .. 8x8 [blocks.RxR]: 3x3 conv + lrelu [conv0]; 3x3 conv + 2x2 downscale (fused weights) + lrelu
  [conv1_down], channels nf(r-1) -> nf(r-2).
- 4x4 [blocks.4x4]: minibatch stddev (+1 map) -> 3x3 conv + lrelu [conv] -> dense to nf(0) + lrelu
  [dense0] -> dense to 1, gain 1 [dense1].
During a fade-in: ``lerp(fromRGB_prev(downscale(img)), block_new(fromRGB_new(img)), alpha)``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from fastprogan.models.generator import res_key
from fastprogan.models.progressive import Level, check_num_channels, feature_maps, level_for, resolution_log2
from fastprogan.nn import ConvDownscale2d, EqualizedConv2d, EqualizedLinear, FromRGB, MinibatchStdDev


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, impl: str) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, activation="lrelu", impl=impl)
        self.conv1_down = ConvDownscale2d(in_channels, out_channels, activation="lrelu", impl=impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1_down(self.conv0(x))


class LastDiscriminatorBlock(nn.Module):
    def __init__(self, channels: int, dense_features: int, *, mbstd_group_size: int, impl: str) -> None:
        super().__init__()
        self.mbstd = MinibatchStdDev(mbstd_group_size, impl=impl) if mbstd_group_size > 1 else None
        in_ch = channels + (1 if self.mbstd is not None else 0)
        self.conv = EqualizedConv2d(in_ch, channels, 3, activation="lrelu", impl=impl)
        self.dense0 = EqualizedLinear(channels * 16, dense_features, activation="lrelu", impl=impl)
        self.dense1 = EqualizedLinear(dense_features, 1, gain=1.0, impl=impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)  # [N, C+1, 4, 4]
        x = self.conv(x)
        return self.dense1(self.dense0(x.flatten(1)))  # [N, 1]


class Discriminator(nn.Module):
    """ProGAN discriminator. ``D(images, lod)`` or ``D(images, alpha=a)`` -> scores [N, 1].

    The active resolution is the input's; a given lod must agree with it.
    """

    def __init__(
        self,
        resolution: int = 1024,
        num_channels: int = 3,
        *,
        fmap_base: int = 8192,
        fmap_decay: float = 1.0,
        fmap_max: int = 512,
        mbstd_group_size: int = 4,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        self.res_log2 = resolution_log2(resolution)
        check_num_channels(num_channels)
        if (
            isinstance(mbstd_group_size, bool)
            or not isinstance(mbstd_group_size, int)
            or mbstd_group_size < 0
        ):
            raise ValueError(
                f"mbstd_group_size must be an int >= 0 (0 or 1 disables), got {mbstd_group_size!r}"
            )
        self.resolution, self.num_channels, self.mbstd_group_size = resolution, num_channels, mbstd_group_size

        nf = functools.partial(feature_maps, fmap_base=fmap_base, fmap_decay=fmap_decay, fmap_max=fmap_max)

        self.fromrgb = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        for r in range(self.res_log2, 2, -1):
            self.fromrgb[res_key(r)] = FromRGB(num_channels, nf(r - 1), impl=impl)
            self.blocks[res_key(r)] = DiscriminatorBlock(nf(r - 1), nf(r - 2), impl=impl)
        self.fromrgb[res_key(2)] = FromRGB(num_channels, nf(1), impl=impl)
        self.blocks[res_key(2)] = LastDiscriminatorBlock(
            nf(1), nf(0), mbstd_group_size=mbstd_group_size, impl=impl
        )

    def level(
        self, images: torch.Tensor, lod: float | None = None, alpha: float | torch.Tensor | None = None
    ) -> Level:
        if images.ndim != 4 or images.shape[1] != self.num_channels or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be [N, {self.num_channels}, R, R], got {tuple(images.shape)}")
        res = int(images.shape[-1])
        if lod is None:
            return level_for(self.res_log2, resolution=res, alpha=alpha)
        if alpha is not None:
            raise ValueError("give either lod or alpha, not both")
        level = level_for(self.res_log2, lod)
        if level.resolution != res:
            raise ValueError(f"lod {lod} means {level.resolution}px images, got {res}px")
        return level

    def forward(
        self, images: torch.Tensor, lod: float | None = None, *, alpha: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        level = self.level(images, lod, alpha)
        r = level.res_log2
        x = self.blocks[res_key(r)](self.fromrgb[res_key(r)](images))
        if level.fading:
            old = self.fromrgb[res_key(r - 1)](F.avg_pool2d(images, 2))
            x = torch.lerp(old, x, level.fade_weight(x))
        if r == 2:
            return x
        for rr in range(r - 1, 1, -1):
            x = self.blocks[res_key(rr)](x)
        return x
