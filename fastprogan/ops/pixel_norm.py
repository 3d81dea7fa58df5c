"""pixel_norm: per-pixel feature-vector normalisation (ProGAN's local response normalisation).

Math: ``y = x * rsqrt(mean_c(x**2) + eps)`` over the channel dim (dim 1) of x [N, C] or [N, C, H, W].
The mean of squares is reduced in fp32 whatever the activation dtype (eps 1e-8 underflows in fp16),
and the result is cast back to x's dtype. Every derivative order (plain torch ops).

The fused form (bias + leaky-ReLU + pixel norm in one pass) is :func:`fastprogan.ops.bias_act`.
"""

from __future__ import annotations

import torch

from fastprogan.ops._common import check_tensor, reduction_dtype

DEFAULT_EPS = 1e-8


def pixel_norm_ref(x: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """The oracle, with the fp32 upcast of the precision policy."""
    xf = x.to(reduction_dtype(x.dtype))
    return (xf * torch.rsqrt(xf.square().mean(dim=1, keepdim=True) + eps)).to(x.dtype)


def pixel_norm(x: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Normalise each pixel's feature vector to unit RMS. x [N, C] or [N, C, H, W] -> same shape."""
    check_tensor("x", x, ndims=(2, 4))
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return pixel_norm_ref(x, eps)
