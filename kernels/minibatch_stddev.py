"""Triton kernels for ProGAN's minibatch standard deviation layer: the forward and the first-order backward.

One kernel writes x and the statistic channel straight into the [N, C+1, H, W] output: no torch.cat,
one read of x. Group semantics are the official ones (see ``fastprogan.ops.minibatch_stddev``): with
M = N / G, sample n belongs to group n mod M, members {m, m + M, ..., m + (G-1) M}.

Program m (one per group) walks the K = C*H*W elements of its members in blocks: copies every member's
block into the output, takes the group mean, then the biased variance around it (re-reading the
block it just loaded, an L1/L2 hit), accumulates sqrt(var + eps) in fp32, and finally broadcasts
mean_k sqrt(var + eps) into the stat channel of each member. Layouts: NCHW or channels_last (from the
strides; other views are copied to NCHW first).

The backward kernel (program m per group again) first sums the stat channel of grad_out over the
members and pixels, then walks the K elements as the forward does, recomputing the group mean and
sd = sqrt(var + eps), and writes grad_x = grad_out[:, :C] + (g_stat / (G * K)) * d / sd for every
member: one launch instead of 16 torch ops. It is the first-order backward only, in the operation
order of the ops layer's differentiable formula (``minibatch_stddev_grad``), which the penalty's
double backward still uses.
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
def _out_offsets(k, C, CHANNELS_LAST: tl.constexpr):
    """Memory-order element k of a sample of x -> its offset in a [C+1, S] sample of the output."""
    if CHANNELS_LAST:
        return (k // C) * (C + 1) + k % C  # pixel p, channel c -> p * (C + 1) + c
    return k  # c * S + p is the same offset in [C+1, S]


@triton.jit
def _stat_offsets(n, p, C, S, CHANNELS_LAST: tl.constexpr):
    """Offsets of pixels p of sample n's statistic channel in the [N, C+1, H, W] output."""
    if CHANNELS_LAST:
        return n * (C + 1) * S + p * (C + 1) + C
    return n * (C + 1) * S + C * S + p


@triton.jit
def _group_sq_dev(x_ptr, k, mask, mean, m, M, G, K, COMPUTE_FP64: tl.constexpr, BLOCK: tl.constexpr):
    """sum over the group's members of (x - mean)**2 at elements k (the second pass over the block)."""
    acc_dtype = tl.float64 if COMPUTE_FP64 else tl.float32
    sq = tl.zeros([BLOCK], dtype=acc_dtype)
    for g in range(G):
        n = (g * M + m).to(tl.int64)
        d = tl.load(x_ptr + n * K + k, mask=mask, other=0.0).to(acc_dtype) - mean
        sq += d * d
    return sq


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
        out_k = _out_offsets(k, C, CHANNELS_LAST)
        total = tl.zeros([BLOCK], dtype=acc_dtype)
        for g in range(G):
            n = (g * M + m).to(tl.int64)
            xv = tl.load(x_ptr + n * K + k, mask=mask, other=0.0)
            tl.store(out_ptr + n * out_stride_n + out_k, xv, mask=mask)
            total += xv.to(acc_dtype)
        mean = total / G
        sq = _group_sq_dev(x_ptr, k, mask, mean, m, M, G, K, COMPUTE_FP64, BLOCK)
        acc += tl.where(mask, tl.sqrt(sq / G + eps), 0.0)
    stat = tl.sum(acc, axis=0) / K
    stat_row = (tl.zeros([BLOCK], dtype=acc_dtype) + stat).to(out_ptr.dtype.element_ty)  # rounded once
    for g in range(G):
        n = (g * M + m).to(tl.int64)
        for p0 in range(0, S, BLOCK):
            p = p0 + tl.arange(0, BLOCK)
            tl.store(out_ptr + _stat_offsets(n, p, C, S, CHANNELS_LAST), stat_row, mask=p < S)


@triton.jit
def minibatch_stddev_bwd_kernel(
    x_ptr,
    gout_ptr,
    gx_ptr,
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
    # The statistic's incoming gradient: grad_out's stat channel summed over the members and pixels.
    g_acc = tl.zeros([BLOCK], dtype=acc_dtype)
    for g in range(G):
        n = (g * M + m).to(tl.int64)
        for p0 in range(0, S, BLOCK):
            p = p0 + tl.arange(0, BLOCK)
            offs = _stat_offsets(n, p, C, S, CHANNELS_LAST)
            g_acc += tl.load(gout_ptr + offs, mask=p < S, other=0.0).to(acc_dtype)
    # d stat / d sd_k = 1 / K, d sd / d x = d / (G * sd); G * K in int64 (it may pass 2**31)
    coef = tl.sum(g_acc, axis=0) / (K.to(tl.int64) * G)
    for k0 in range(0, K, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        mask = k < K
        out_k = _out_offsets(k, C, CHANNELS_LAST)
        total = tl.zeros([BLOCK], dtype=acc_dtype)
        for g in range(G):
            n = (g * M + m).to(tl.int64)
            total += tl.load(x_ptr + n * K + k, mask=mask, other=0.0).to(acc_dtype)
        mean = total / G
        sq = _group_sq_dev(x_ptr, k, mask, mean, m, M, G, K, COMPUTE_FP64, BLOCK)
        sd = tl.sqrt(sq / G + eps)
        for g in range(G):
            n = (g * M + m).to(tl.int64)
            d = tl.load(x_ptr + n * K + k, mask=mask, other=0.0).to(acc_dtype) - mean
            # rounded to the activation dtype before the sum, as the formula adds two x.dtype tensors
            gx = (coef * d / sd).to(gx_ptr.dtype.element_ty).to(acc_dtype)
            go = tl.load(gout_ptr + n * out_stride_n + out_k, mask=mask, other=0.0).to(acc_dtype)
            tl.store(gx_ptr + n * K + k, (go + gx).to(gx_ptr.dtype.element_ty), mask=mask)


def output_layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format of the [N, C+1, H, W] output: x's, when x is channels_last-dense."""
    _, channels_last = dense_layout(x)
    return torch.channels_last if channels_last else torch.contiguous_format


def _dense_input(x: torch.Tensor) -> tuple[torch.Tensor, bool, torch.memory_format]:
    """x in a dense layout, channels_last?, and that layout's memory format (shared by both launchers)."""
    x, channels_last = dense_layout(x)
    _, c, h, w = x.shape
    if c * h * w >= 2**31:
        raise ValueError(f"minibatch_stddev kernel: one sample has {c * h * w} >= 2**31 elements")
    return x, channels_last, torch.channels_last if channels_last else torch.contiguous_format


def _launch(kernel, x: torch.Tensor, tensors: tuple, groups: int, eps: float, channels_last: bool) -> None:
    """One program per group: ``kernel[(N / G,)](*tensors, M, G, C, H*W, eps, ...)``."""
    n, c, h, w = x.shape
    if x.numel():
        m = n // groups
        kernel[(m,)](
            *tensors,
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


def minibatch_stddev_forward(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """x [N, C, H, W] -> [N, C+1, H, W]; ``groups`` = G (already validated to divide N)."""
    x, channels_last, fmt = _dense_input(x)
    n, c, h, w = x.shape
    out = torch.empty((n, c + 1, h, w), dtype=x.dtype, device=x.device, memory_format=fmt)
    _launch(minibatch_stddev_fwd_kernel, x, (x, out), groups, eps, channels_last)
    return out


def minibatch_stddev_backward(
    x: torch.Tensor, grad_out: torch.Tensor, groups: int, eps: float
) -> torch.Tensor:
    """The input gradient: x [N, C, H, W], grad_out [N, C+1, H, W] -> [N, C, H, W] in x's (dense) layout."""
    x, channels_last, fmt = _dense_input(x)
    grad_out = grad_out.to(x.dtype).contiguous(memory_format=fmt)  # the forward output's layout
    grad_x = torch.empty_like(x, memory_format=fmt)
    _launch(minibatch_stddev_bwd_kernel, x, (x, grad_out, grad_x), groups, eps, channels_last)
    return grad_x


_PTR = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def launch_configs() -> list[dict]:
    """Every (kernel, signature, constexprs, num_warps) the forward and backward launchers can use on a GPU."""
    pointers = {
        minibatch_stddev_fwd_kernel: ("x_ptr", "out_ptr"),
        minibatch_stddev_bwd_kernel: ("x_ptr", "gout_ptr", "gx_ptr"),
    }
    return [
        {
            "kernel": kernel,
            "signature": {
                **{name: _PTR[dtype] for name in names},
                "M": "i32",
                "G": "i32",
                "C": "i32",
                "S": "i32",
                "eps": "fp32",
            },
            "constexprs": {"CHANNELS_LAST": channels_last, "COMPUTE_FP64": False, "BLOCK": BLOCK},
            "num_warps": NUM_WARPS,
        }
        for kernel, names in pointers.items()
        for dtype in GPU_DTYPES
        for channels_last in (False, True)
    ]
