"""Resampling convolutions with fused weights: G's upscale+conv and D's conv+downscale.

Both hold a 3x3 kernel (fan-in 9 * C_in for the equalized-LR scale, as the paper's fused layers) and
run it through :func:`fastprogan.ops.upscale_conv2d` / :func:`fastprogan.ops.conv2d_downscale`
(one stride-2 cuDNN conv with a 4x4 kernel), followed by the fused bias/activation epilogue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fastprogan.nn.equalized import EqualizedConv2d
from fastprogan.ops import conv2d_downscale, upscale_conv2d
from fastprogan.ops.conv2d_bias_act import conv2d_downscale_bias_act, layer_impl, upscale_conv2d_bias_act


class _ResampleConv2d(EqualizedConv2d):
    """A 3x3 equalized conv (fan-in 9 * C_in) run through a fused resampling op; leaky-ReLU by default.

    Keyword arguments are those of :class:`EqualizedConv2d`.
    """

    resample: Callable[..., torch.Tensor]  # the op, set by each subclass

    def __init__(
        self, in_channels: int, out_channels: int, *, activation: str = "lrelu", **kwargs: Any
    ) -> None:
        super().__init__(in_channels, out_channels, 3, activation=activation, **kwargs)
        # One switch for the whole layer: "ref" runs the unfused oracle conv too; otherwise the fused
        # 4x4-weight conv (the op's "auto") with the epilogue's impl ("auto" or "triton").
        self.conv_impl = "ref" if self.impl == "ref" else "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.epilogue(type(self).resample(x, self.scaled_weight(x), impl=self.conv_impl))


class UpscaleConv2d(_ResampleConv2d):
    """Nearest 2x upsample + 3x3 conv + bias/act(/pixel norm). x [N, C_in, H, W] -> [N, C_out, 2H, 2W].

    ``impl`` picks the epilogue ("auto", "triton", "ref"); "ref" also runs the unfused conv.
    """

    resample = staticmethod(upscale_conv2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # upsample + conv + epilogue as one parity kernel where the impl switch / dispatch picks it
        impl = layer_impl(self.impl, x, self.out_channels)
        if impl is not None:
            return upscale_conv2d_bias_act(
                x, self.scaled_weight(x), self.bias, self.negative_slope, self.pixel_norm, self.eps, impl=impl
            )
        return super().forward(x)


class ConvDownscale2d(_ResampleConv2d):
    """3x3 conv + 2x2 average pool + bias/act. x [N, C_in, H, W] -> [N, C_out, H/2, W/2].

    ``impl`` picks the epilogue ("auto", "triton", "ref"); "ref" also runs the unfused conv.
    """

    resample = staticmethod(conv2d_downscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # conv + pool + epilogue as one stride-2 kernel where the impl switch / dispatch picks it
        impl = None if self.pixel_norm else layer_impl(self.impl, x, self.out_channels)
        if impl is not None:
            return conv2d_downscale_bias_act(
                x, self.scaled_weight(x), self.bias, self.negative_slope, impl=impl
            )
        return super().forward(x)
