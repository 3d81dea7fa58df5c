"""The ProGAN generator (CelebA-HQ configuration by default), run at the active resolution.

Structure (state_dict names in brackets map to the paper's layers):
- 4x4 [blocks.4x4]: latent (pixel-normalised) -> dense to nf*16 with gain sqrt(2)/4 [dense], reshape
  to [nf, 4, 4], bias + lrelu + pixel norm; 3x3 conv + lrelu + pixel norm [conv].
- 8x8 .. R [blocks.RxR]: upscale x2 + 3x3 conv (fused weights) [conv0_up]; 3x3 conv [conv1]; each
  followed by bias + lrelu + pixel norm in one fused epilogue.
- toRGB per resolution [torgb.RxR]: 1x1 conv, gain 1, linear.
During a fade-in the output is ``lerp(upscale(toRGB_prev(x_prev)), toRGB_new(x_new), alpha)``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from fastprogan.models.progressive import Level, check_num_channels, feature_maps, level_for, resolution_log2
from fastprogan.nn import EqualizedConv2d, EqualizedLinear, ToRGB, UpscaleConv2d
from fastprogan.ops import bias_act, pixel_norm


def res_key(res_log2: int) -> str:
    r = 1 << res_log2
    return f"{r}x{r}"


class LatentToFeatures(nn.Module):
    """Dense latent -> [C, 4, 4] with a per-channel bias, then lrelu (+ pixel norm): G's first layer.

    The bias is per feature map (C entries), as the official layer applies it after the reshape.
    """

    def __init__(self, latent_size: int, channels: int, *, pixel_norm: bool, eps: float, impl: str) -> None:
        super().__init__()
        # gain sqrt(2)/4 matches the original Theano implementation (PROGAN_SPEC.md section 1).
        self.linear = EqualizedLinear(
            latent_size, channels * 16, gain=math.sqrt(2) / 4, bias=False, impl=impl
        )
        self.bias = nn.Parameter(torch.zeros(channels))
        self.channels, self.pixel_norm, self.eps, self.impl = channels, pixel_norm, eps, impl

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.linear(z).reshape(-1, self.channels, 4, 4)  # [N, C, 4, 4]
        return bias_act(x, self.bias, 0.2, self.pixel_norm, self.eps, impl=self.impl)


class GeneratorBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, pixel_norm: bool, eps: float, impl: str):
        super().__init__()
        kw = dict(activation="lrelu", pixel_norm=pixel_norm, eps=eps, impl=impl)
        self.conv0_up = UpscaleConv2d(in_channels, out_channels, **kw)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.conv0_up(x))


class FirstGeneratorBlock(nn.Module):
    def __init__(self, latent_size: int, channels: int, *, pixel_norm: bool, eps: float, impl: str):
        super().__init__()
        self.dense = LatentToFeatures(latent_size, channels, pixel_norm=pixel_norm, eps=eps, impl=impl)
        self.conv = EqualizedConv2d(
            channels, channels, 3, activation="lrelu", pixel_norm=pixel_norm, eps=eps, impl=impl
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(self.dense(z))


class Generator(nn.Module):
    """ProGAN generator. ``G(z, lod)`` or ``G(z, resolution=R, alpha=a)`` -> images [N, C, R, R].

    Only the blocks up to the active resolution run. Output is linear (no tanh), images in about [-1, 1].
    """

    def __init__(
        self,
        resolution: int = 1024,
        num_channels: int = 3,
        *,
        fmap_base: int = 8192,
        fmap_decay: float = 1.0,
        fmap_max: int = 512,
        latent_size: int | None = None,
        normalize_latents: bool = True,
        use_pixelnorm: bool = True,
        pixelnorm_eps: float = 1e-8,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        self.res_log2 = resolution_log2(resolution)
        check_num_channels(num_channels)
        self.resolution, self.num_channels = resolution, num_channels

        nf = functools.partial(feature_maps, fmap_base=fmap_base, fmap_decay=fmap_decay, fmap_max=fmap_max)

        self.latent_size = nf(0) if latent_size is None else latent_size
        self.normalize_latents, self.pixelnorm_eps, self.impl = normalize_latents, pixelnorm_eps, impl
        kw = dict(pixel_norm=use_pixelnorm, eps=pixelnorm_eps, impl=impl)
        self.blocks = nn.ModuleDict({res_key(2): FirstGeneratorBlock(self.latent_size, nf(1), **kw)})
        self.torgb = nn.ModuleDict({res_key(2): ToRGB(nf(1), num_channels, impl=impl)})
        for r in range(3, self.res_log2 + 1):
            self.blocks[res_key(r)] = GeneratorBlock(nf(r - 2), nf(r - 1), **kw)
            self.torgb[res_key(r)] = ToRGB(nf(r - 1), num_channels, impl=impl)

    def level(
        self,
        lod: float | None = None,
        resolution: int | None = None,
        alpha: float | torch.Tensor | None = None,
    ) -> Level:
        return level_for(self.res_log2, lod, resolution, alpha)

    def forward(
        self,
        z: torch.Tensor,
        lod: float | None = None,
        *,
        resolution: int | None = None,
        alpha: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"z must be [N, {self.latent_size}], got {tuple(z.shape)}")
        level = self.level(lod, resolution, alpha)
        if self.normalize_latents:
            z = pixel_norm(z, self.pixelnorm_eps, impl=self.impl)  # the layers' impl, as every other op
        x = self.blocks[res_key(2)](z)  # [N, nf(1), 4, 4]
        x_prev = x
        for r in range(3, level.res_log2 + 1):
            x_prev, x = x, self.blocks[res_key(r)](x)
        img = self.torgb[res_key(level.res_log2)](x)  # [N, C, R, R]
        if level.fading:
            old = F.interpolate(
                self.torgb[res_key(level.res_log2 - 1)](x_prev), scale_factor=2, mode="nearest"
            )
            img = torch.lerp(old, img, level.fade_weight(img))
        return img
