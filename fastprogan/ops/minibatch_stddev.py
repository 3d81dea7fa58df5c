"""minibatch_stddev: append the group standard deviation as one extra feature map (ProGAN D, 4x4).

Math, exactly as the official layer: G = min(group_size, N) and N must be divisible by G; view x
[N, C, H, W] as [G, M, C, H, W] (M = N / G) and reduce over axis 0, so sample n belongs to the group
{n' : n' = n mod M} (strided, not consecutive). In fp32: subtract the group mean, take the biased
mean of squares over the group, sqrt(var + 1e-8), average over C, H, W -> one scalar per group,
broadcast over H, W to every member. Output [N, C+1, H, W] in x's dtype. All derivative orders.
"""

from __future__ import annotations

import torch

from fastprogan.ops._common import check_tensor, reduction_dtype, resolve_impl

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


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, *, impl: str = "auto") -> torch.Tensor:
    """Append the minibatch standard deviation map. x [N, C, H, W] -> [N, C+1, H, W]."""
    check_tensor("x", x)
    group_size_for(x.shape[0], group_size)
    resolve_impl("minibatch_stddev", impl, x, has_triton=False)
    return minibatch_stddev_ref(x, group_size)
