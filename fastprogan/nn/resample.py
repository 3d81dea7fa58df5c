"""Resampling convolutions with fused weights: G's upscale+conv and D's conv+downscale.

Both hold a 3x3 kernel (fan-in 9 * C_in for the equalized-LR scale, as the paper's fused layers) and
run it through :func:`fastprogan.ops.upscale_conv2d` / :func:`fastprogan.ops.conv2d_downscale`
(one stride-2 cuDNN conv with a 4x4 kernel), followed by the fused bias/activation epilogue.
"""

from __future__ import annotations

import torch

from fastprogan.nn.equalized import SQRT2, EqualizedLayer
from fastprogan.ops import conv2d_downscale, upscale_conv2d
from fastprogan.ops.pixel_norm import DEFAULT_EPS


class _ResampleConv2d(EqualizedLayer):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        gain: float,
        bias: bool,
        activation: str,
        negative_slope: float,
        pixel_norm: bool,
        eps: float,
        impl: str,
    ) -> None:
        super().__init__(
            out_channels,
            bias=bias,
            activation=activation,
            negative_slope=negative_slope,
            pixel_norm=pixel_norm,
            eps=eps,
            impl=impl,
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        # One switch for the whole layer: "ref" runs the unfused oracle conv too; otherwise the fused
        # 4x4-weight conv (the op's "auto") with the epilogue's impl ("auto" or "triton").
        self.conv_impl = "ref" if impl == "ref" else "auto"
        self._init_weight((out_channels, in_channels, 3, 3), in_channels * 9, gain)


class UpscaleConv2d(_ResampleConv2d):
    """Nearest 2x upsample + 3x3 conv + bias/act(/pixel norm). x [N, C_in, H, W] -> [N, C_out, 2H, 2W].

    ``impl`` picks the epilogue ("auto", "triton", "ref"); "ref" also runs the unfused conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        gain: float = SQRT2,
        bias: bool = True,
        activation: str = "lrelu",
        negative_slope: float = 0.2,
        pixel_norm: bool = False,
        eps: float = DEFAULT_EPS,
        impl: str = "auto",
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            gain=gain,
            bias=bias,
            activation=activation,
            negative_slope=negative_slope,
            pixel_norm=pixel_norm,
            eps=eps,
            impl=impl,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.epilogue(upscale_conv2d(x, self.scaled_weight(x), impl=self.conv_impl))


class ConvDownscale2d(_ResampleConv2d):
    """3x3 conv + 2x2 average pool + bias/act. x [N, C_in, H, W] -> [N, C_out, H/2, W/2].

    ``impl`` picks the epilogue ("auto", "triton", "ref"); "ref" also runs the unfused conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        gain: float = SQRT2,
        bias: bool = True,
        activation: str = "lrelu",
        negative_slope: float = 0.2,
        impl: str = "auto",
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            gain=gain,
            bias=bias,
            activation=activation,
            negative_slope=negative_slope,
            pixel_norm=False,
            eps=DEFAULT_EPS,
            impl=impl,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.epilogue(conv2d_downscale(x, self.scaled_weight(x), impl=self.conv_impl))
