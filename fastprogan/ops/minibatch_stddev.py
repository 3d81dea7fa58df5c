"""minibatch_stddev: append the group standard deviation as one extra feature map (ProGAN D, 4x4).

Math, exactly as the official layer: G = min(group_size, N) and N must be divisible by G; view x
[N, C, H, W] as [G, M, C, H, W] (M = N / G) and reduce over axis 0, so sample n belongs to the group
{n' : n' = n mod M} (strided, not consecutive). In fp32: subtract the group mean, take the biased
mean of squares over the group, sqrt(var + 1e-8), average over C, H, W -> one scalar per group,
broadcast over H, W to every member. Output [N, C+1, H, W] in x's dtype.

Triton (``impl="triton"``, the default on CUDA): one kernel (``fastprogan.kernels.minibatch_stddev``)
copies x and writes the statistic channel straight into the [N, C+1, H, W] output (no torch.cat); NCHW
or channels_last (the output keeps x's layout; other views are copied to NCHW first); fp32/fp16/bf16.
The first-order backward is one Triton kernel too (``fastprogan::minibatch_stddev_backward``: 1 dispatch
instead of 16 torch ops, 3 times per training iteration). Where the backward is itself differentiated
(``create_graph=True``, the WGAN-GP penalty in D) it runs :func:`minibatch_stddev_grad` instead, written
with differentiable torch ops (recomputing the group statistics from the saved x), so every derivative
order is available. Both compute the same formula in the same operation order, in fp32.
"""

from __future__ import annotations

import torch

from fastprogan.ops._common import (
    check_tensor,
    dense_format,
    empty_like_dense,
    kernel_dtype_ok,
    reduction_dtype,
    resolve_impl,
)
from fastprogan.ops._kernels import load_kernels

STDDEV_EPS = 1e-8


def group_size_for(n: int, group_size: int) -> int:
    """The group actually used for a batch of ``n``: min(group_size, n), which must divide n."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    g = min(group_size, n)
    if n % g:
        raise ValueError(f"minibatch_stddev: batch size N={n} is not divisible by group_size={g}")
    return g


def minibatch_stddev_ref(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """The oracle: the official composition of reductions, in fp32."""
    n, c, h, w = x.shape
    g = group_size_for(n, group_size)
    y = x.to(reduction_dtype(x.dtype)).reshape(g, -1, c, h, w)  # [G, M, C, H, W]
    y = y - y.mean(dim=0, keepdim=True)
    y = (y.square().mean(dim=0) + STDDEV_EPS).sqrt()  # [M, C, H, W]
    y = y.mean(dim=(1, 2, 3)).to(x.dtype)  # [M]
    y = y.reshape(1, -1, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)  # [N, 1, H, W], n -> y[n % M]
    return torch.cat([x, y], dim=1)


def minibatch_stddev_grad(x: torch.Tensor, grad_out: torch.Tensor, groups: int) -> torch.Tensor:
    """The input gradient of the layer, with differentiable torch ops (so double backward is automatic).

    With d = x - mean_g(x) and sd = sqrt(mean_g(d^2) + eps) per (group, element), the statistic is
    s_m = mean_k sd, so ds_m/dx = d / (G * sd * K), K = C*H*W; the statistic's incoming gradient is
    the sum of grad_out's last channel over the group members and pixels. Reduced in fp32 (fp64 for
    fp64 x).
    """
    n, c, h, w = x.shape
    k = c * h * w
    acc_dtype = reduction_dtype(x.dtype)  # fp32, or fp64 for gradcheck
    xf = x.to(acc_dtype).reshape(groups, -1, c, h, w)  # [G, M, C, H, W]
    d = xf - xf.mean(dim=0, keepdim=True)
    sd = (d.square().mean(dim=0, keepdim=True) + STDDEV_EPS).sqrt()  # [1, M, C, H, W]
    # keepdim: the sum's own backward (in the double backward) is then one expand, not two unsqueezes more
    grad_stat = (
        grad_out[:, c].to(acc_dtype).reshape(groups, -1, h * w).sum(dim=(0, 2), keepdim=True)
    )  # [1, M, 1]
    grad_x = (grad_stat.reshape(1, -1, 1, 1, 1) / (groups * k)) * d / sd  # [G, M, C, H, W]
    return grad_out[:, :c] + grad_x.reshape(n, c, h, w).to(x.dtype)


@torch.library.custom_op(
    "fastprogan::minibatch_stddev", mutates_args=(), schema="(Tensor x, int groups) -> Tensor"
)
def _minibatch_stddev_op(x: torch.Tensor, groups: int) -> torch.Tensor:
    return load_kernels("minibatch_stddev").minibatch_stddev_forward(x, groups, STDDEV_EPS)


@_minibatch_stddev_op.register_fake
def _(x, groups):
    n, c, h, w = x.shape
    return x.new_empty((n, c + 1, h, w)).contiguous(memory_format=dense_format(x))


@torch.library.custom_op(
    "fastprogan::minibatch_stddev_backward",
    mutates_args=(),
    schema="(Tensor x, Tensor grad_out, int groups) -> Tensor",
)
def _minibatch_stddev_backward_op(x: torch.Tensor, grad_out: torch.Tensor, groups: int) -> torch.Tensor:
    return load_kernels("minibatch_stddev").minibatch_stddev_backward(x, grad_out, groups, STDDEV_EPS)


@_minibatch_stddev_backward_op.register_fake
def _(x, grad_out, groups):
    return empty_like_dense(x)


def _minibatch_stddev_setup(ctx, inputs, output):
    x, groups = inputs
    ctx.groups = groups
    # No incoming gradient stays None: in the WGAN-GP loss.backward the penalty pass's forward graph
    # gets none (bias_act's saved output has a zero derivative), and a materialised zeros tensor would
    # run this backward and every conv/bias backward below it on zeros (38 dispatches at 16x16).
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x)


def _minibatch_stddev_backward(ctx, grad_out):
    if grad_out is None:
        return None, None
    (x,) = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: this backward is differentiated again
        return minibatch_stddev_grad(x, grad_out, ctx.groups), None
    return torch.ops.fastprogan.minibatch_stddev_backward(x, grad_out, ctx.groups), None


_minibatch_stddev_op.register_autograd(_minibatch_stddev_backward, setup_context=_minibatch_stddev_setup)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, *, impl: str = "auto") -> torch.Tensor:
    """Append the minibatch standard deviation map. x [N, C, H, W] -> [N, C+1, H, W].

    ``impl``: "auto" (Triton on CUDA, the reference elsewhere), "triton" (on CPU only under
    TRITON_INTERPRET=1) or "ref". Every derivative order on both paths.
    """
    check_tensor("x", x)
    groups = group_size_for(x.shape[0], group_size)
    which = resolve_impl("minibatch_stddev", impl, x, has_triton=True, kernel_dtype_ok=kernel_dtype_ok(x))
    if which == "ref":
        return minibatch_stddev_ref(x, group_size)
    return torch.ops.fastprogan.minibatch_stddev(x, groups)
