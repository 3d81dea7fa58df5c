"""Triton kernel for ProGAN's minibatch standard deviation layer (forward only).

One kernel writes x and the statistic channel straight into the [N, C+1, H, W] output: no torch.cat,
one read of x. Group semantics are the official ones (see ``fastprogan.ops.minibatch_stddev``): with
M = N / G, sample n belongs to group n mod M, members {m, m + M, ..., m + (G-1) M}.

Program m (one per group) walks the K = C*H*W elements of its members in blocks: copies every member's
block into the output, takes the group mean, then the biased variance around it (re-reading the
block it just loaded, an L1/L2 hit), accumulates sqrt(var + eps) in fp32, and finally broadcasts
mean_k sqrt(var + eps) into the stat channel of each member. Layouts: NCHW or channels_last (from the
strides; other views are copied to NCHW first). The backward is plain torch (ops layer).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._layout import dense_layout

BLOCK = 1024
NUM_WARPS = 4
GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def minibatch_stddev_fwd_kernel(
    x_ptr,
    out_ptr,
    M,
    G,
    C,
    S,
    eps,
    CHANNELS_LAST: tl.constexpr,
    COMPUTE_FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    m = tl.program_id(0)
    K = C * S  # elements per sample (< 2**31, checked by the launcher)
    out_stride_n = (C + 1) * S
    acc_dtype = tl.float64 if COMPUTE_FP64 else tl.float32
    acc = tl.zeros([BLOCK], dtype=acc_dtype)
    for k0 in range(0, K, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        mask = k < K
        if CHANNELS_LAST:
            out_k = (k // C) * (C + 1) + k % C  # pixel p, channel c -> p * (C + 1) + c
        else:
            out_k = k  # c * S + p is the same offset in [C+1, S]
        total = tl.zeros([BLOCK], dtype=acc_dtype)
        for g in range(G):
            n = (g * M + m).to(tl.int64)
            xv = tl.load(x_ptr + n * K + k, mask=mask, other=0.0)
            tl.store(out_ptr + n * out_stride_n + out_k, xv, mask=mask)
            total += xv.to(acc_dtype)
        mean = total / G
        sq = tl.zeros([BLOCK], dtype=acc_dtype)
        for g in range(G):
            n = (g * M + m).to(tl.int64)
            d = tl.load(x_ptr + n * K + k, mask=mask, other=0.0).to(acc_dtype) - mean
            sq += d * d
        acc += tl.where(mask, tl.sqrt(sq / G + eps), 0.0)
    stat = tl.sum(acc, axis=0) / K
    stat_row = (tl.zeros([BLOCK], dtype=acc_dtype) + stat).to(out_ptr.dtype.element_ty)  # rounded once
    for g in range(G):
        n = (g * M + m).to(tl.int64)
        for p0 in range(0, S, BLOCK):
            p = p0 + tl.arange(0, BLOCK)
            if CHANNELS_LAST:
                offs = n * out_stride_n + p * (C + 1) + C
            else:
                offs = n * out_stride_n + C * S + p
            tl.store(out_ptr + offs, stat_row, mask=p < S)


def output_layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format of the [N, C+1, H, W] output: x's, when x is channels_last-dense."""
    _, channels_last = dense_layout(x)
    return torch.channels_last if channels_last else torch.contiguous_format


def minibatch_stddev_forward(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """x [N, C, H, W] -> [N, C+1, H, W]; ``groups`` = G (already validated to divide N)."""
    x, channels_last = dense_layout(x)
    n, c, h, w = x.shape
    if c * h * w >= 2**31:
        raise ValueError(f"minibatch_stddev kernel: one sample has {c * h * w} >= 2**31 elements")
    out = torch.empty(
        (n, c + 1, h, w),
        dtype=x.dtype,
        device=x.device,
        memory_format=torch.channels_last if channels_last else torch.contiguous_format,
    )
    if out.numel():
        m = n // groups
        minibatch_stddev_fwd_kernel[(m,)](
            x,
            out,
            m,
            groups,
            c,
            h * w,
            float(eps),
            CHANNELS_LAST=channels_last,
            COMPUTE_FP64=x.dtype == torch.float64,
            BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )
    return out


_PTR = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def launch_configs() -> list[dict]:
    """Every (kernel, signature, constexprs, num_warps) ``minibatch_stddev_forward`` can launch on a GPU."""
    return [
        {
            "kernel": minibatch_stddev_fwd_kernel,
            "signature": {
                "x_ptr": _PTR[dtype],
                "out_ptr": _PTR[dtype],
                "M": "i32",
                "G": "i32",
                "C": "i32",
                "S": "i32",
                "eps": "fp32",
            },
            "constexprs": {"CHANNELS_LAST": channels_last, "COMPUTE_FP64": False, "BLOCK": BLOCK},
            "num_warps": NUM_WARPS,
        }
        for dtype in GPU_DTYPES
        for channels_last in (False, True)
    ]
