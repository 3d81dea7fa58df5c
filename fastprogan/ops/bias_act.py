"""bias_act: bias add + leaky-ReLU + optional pixel norm, the epilogue of every ProGAN layer.

Math: ``y = lrelu(x + b, slope)``, then optionally ``y *= rsqrt(mean_c(y**2) + eps)`` over channels,
for x [N, C] or [N, C, H, W] (NCHW or channels_last) and b [C]. ``negative_slope=1.0`` is the linear
activation (toRGB, D's last dense). Math in fp32, output in x's dtype; fp32 parameters are cast inside.

Derivatives: the reference is plain torch, so every order. (Fused kernels: see fastprogan.kernels.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastprogan.ops._common import check_channels, check_same_device, check_tensor, resolve_impl
from fastprogan.ops.pixel_norm import DEFAULT_EPS, pixel_norm_ref


def bias_act_ref(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    pixel_norm: bool = False,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """The oracle: unfused torch ops (pixel norm reduced in fp32)."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    if negative_slope != 1.0:
        x = F.leaky_relu(x, negative_slope)
    if pixel_norm:
        x = pixel_norm_ref(x, eps)
    return x


def check_bias_act_args(
    x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float, eps: float
) -> None:
    check_tensor("x", x, ndims=(2, 4))
    if bias is not None:
        check_tensor("bias", bias, ndims=(1,))
        check_channels("bias", bias, x.shape[1], "one per channel of x")
        check_same_device(x=x, bias=bias)
    if not 0.0 <= negative_slope <= 1.0:
        raise ValueError(f"negative_slope must be in [0, 1], got {negative_slope}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    pixel_norm: bool = False,
    eps: float = DEFAULT_EPS,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """``lrelu(x + bias)`` then optional pixel norm, in one pass where a fused kernel runs."""
    check_bias_act_args(x, bias, negative_slope, eps)
    resolve_impl("bias_act", impl, x, has_triton=False)
    return bias_act_ref(x, bias, negative_slope, pixel_norm, eps)
