"""Parameter-light layers: pixel norm, bias + activation, minibatch stddev, toRGB / fromRGB."""

from __future__ import annotations

import torch
from torch import nn

from fastprogan.nn.equalized import ACTIVATIONS, EqualizedConv2d
from fastprogan.ops import bias_act, minibatch_stddev, pixel_norm
from fastprogan.ops.pixel_norm import DEFAULT_EPS


class PixelNorm(nn.Module):
    """``x * rsqrt(mean_c(x**2) + eps)`` over dim 1 (fp32 reduction). [N, C(, H, W)] -> same shape."""

    def __init__(self, eps: float = DEFAULT_EPS) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_norm(x, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}"


class BiasAct(nn.Module):
    """A learned per-channel bias, then leaky-ReLU (or linear), then optional pixel norm: one fused pass."""

    def __init__(
        self,
        channels: int,
        *,
        activation: str = "lrelu",
        negative_slope: float = 0.2,
        pixel_norm: bool = False,
        eps: float = DEFAULT_EPS,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.bias = nn.Parameter(torch.zeros(channels))
        self.negative_slope = 1.0 if activation == "linear" else negative_slope
        self.pixel_norm, self.eps, self.impl = pixel_norm, eps, impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_act(x, self.bias, self.negative_slope, self.pixel_norm, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        return f"channels={self.bias.shape[0]}, negative_slope={self.negative_slope}, pixel_norm={self.pixel_norm}"


class MinibatchStdDev(nn.Module):
    """Append the group standard deviation as one feature map. [N, C, H, W] -> [N, C+1, H, W]."""

    def __init__(self, group_size: int = 4, impl: str = "auto") -> None:
        super().__init__()
        self.group_size, self.impl = group_size, impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return minibatch_stddev(x, self.group_size, impl=self.impl)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class ToRGB(EqualizedConv2d):
    """1x1 conv to image channels, gain 1, linear (the generator's per-resolution output)."""

    def __init__(self, in_channels: int, out_channels: int = 3, *, impl: str = "auto") -> None:
        super().__init__(in_channels, out_channels, 1, gain=1.0, activation="linear", impl=impl)


class FromRGB(EqualizedConv2d):
    """1x1 conv from image channels + leaky-ReLU (the discriminator's per-resolution input)."""

    def __init__(self, in_channels: int, out_channels: int, *, impl: str = "auto") -> None:
        super().__init__(in_channels, out_channels, 1, activation="lrelu", impl=impl)
