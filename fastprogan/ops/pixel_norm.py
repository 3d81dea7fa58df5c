"""pixel_norm: per-pixel feature-vector normalisation (ProGAN's local response normalisation).

Math: ``y = x * rsqrt(mean_c(x**2) + eps)`` over the channel dim (dim 1) of x [N, C] or [N, C, H, W].
The mean of squares is reduced in fp32 whatever the activation dtype (eps 1e-8 underflows in fp16),
and the result is cast back to x's dtype.

The reference is plain torch (every derivative order). ``impl="triton"`` (the default on CUDA) runs the
Triton kernel of :func:`fastprogan.ops.bias_act` with no bias and a linear activation: one pass, first
order only (the generator's latent normalisation). The fused form (bias + leaky-ReLU + pixel norm in
one pass) is :func:`fastprogan.ops.bias_act` itself.
"""

from __future__ import annotations

import torch

from fastprogan.ops._common import check_tensor, kernel_dtype_ok, reduction_dtype, resolve_impl

DEFAULT_EPS = 1e-8


def pixel_norm_ref(x: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """The oracle, with the fp32 upcast of the precision policy."""
    xf = x.to(reduction_dtype(x.dtype))
    return (xf * torch.rsqrt(xf.square().mean(dim=1, keepdim=True) + eps)).to(x.dtype)


def pixel_norm(x: torch.Tensor, eps: float = DEFAULT_EPS, *, impl: str = "auto") -> torch.Tensor:
    """Normalise each pixel's feature vector to unit RMS. x [N, C] or [N, C, H, W] -> same shape.

    ``impl``: "auto" (Triton on CUDA, the reference elsewhere), "triton" or "ref".
    """
    check_tensor("x", x, ndims=(2, 4))
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if resolve_impl("pixel_norm", impl, x, has_triton=True, kernel_dtype_ok=kernel_dtype_ok(x)) == "ref":
        return pixel_norm_ref(x, eps)
    import fastprogan.ops.bias_act  # noqa: F401  (registers the fastprogan:: ops; imports pixel_norm)

    return torch.ops.fastprogan.bias_act_pixel_norm(x, None, 1.0, float(eps))[0]
