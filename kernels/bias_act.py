"""Triton kernels for bias + leaky-ReLU (+ pixel norm): the epilogue of every ProGAN layer.

Device code and launch helpers only; autograd, dispatch and validation live in
``fastprogan.ops.bias_act``. Every launch helper picks its config from the module-level tables below
(``LAUNCH_CONFIGS`` lists every variant that can be launched), so the static GPU check
(``python -m fastprogan.tools.static_check``) compiles exactly what runs.

Layouts. A 4-D activation [N, C, H, W] is addressed as [N, C, S] with S = H*W, either NCHW
(pixels contiguous) or channels_last (channels contiguous), chosen by the ``CHANNELS_LAST`` constexpr
from the tensor's strides. A 2-D activation [N, C] (dense layers) is addressed as one channels_last
image of S = N pixels. Non-dense views are copied to a dense layout by the caller (``dense_layout``).

Math is fp32 (fp64 when the activation is fp64, which only the interpreter runs: gradcheck). Outputs
are stored in the activation dtype; parameters of any float dtype are cast inside the kernel. Offsets
are int64 where they can exceed 2**31 (batch x image at 1024x1024).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._layout import dense_layout

# ----------------------------------------------------------------------------------------------------
# Configs (the static check compiles every entry of LAUNCH_CONFIGS for sm_80 and sm_90).


@dataclass(frozen=True)
class TileConfig:
    """A [BLOCK_C, BLOCK_P] channel x pixel tile of the pixel-norm kernels."""

    block_c: int
    block_p: int
    num_warps: int


# One tile per channel bucket; ProGAN's channel counts (16..512) each get an exact bucket, odd counts
# round up (masked lanes). Tiles keep rows of >= 16 pixels (64 B in fp32: whole sectors in NCHW) and
# 16 values per thread per live tensor: the static check measured 4096-element tiles on 4 warps (32
# values per thread) at 150-255 registers with spills in the backward on sm_90, and the same tiles on
# 8 warps (16 per thread) without spills at about half the registers (docs/kernels.md has the table).
PIXEL_NORM_TILES = (
    TileConfig(4, 1024, 8),
    TileConfig(16, 256, 8),
    TileConfig(32, 128, 8),
    TileConfig(64, 64, 8),
    TileConfig(128, 32, 8),
    TileConfig(256, 16, 8),
    TileConfig(512, 16, 16),
)
# C > 512: two passes over channel blocks. 16 warps (512 threads) cap ptxas at 128 registers per
# thread, and the looped 512-channel tile spilled 16-48 B under that cap (static check); 256-channel
# blocks on 8 warps do not.
LOOP_TILE = TileConfig(256, 16, 8)
# Elementwise kernels (no channel reduction): one flat block per program.
FLAT_BLOCK = 2048
FLAT_WARPS = 4
# lrelu_grad with the bias gradient folded in (D path): [BLOCK_C, BLOCK_P] tiles of 2048 elements,
# the contiguous dimension the long one; each program walks LRELU_BIAS_ITERS pixel tiles of one image
# and writes one row of partial sums. 8 warps (8 values per thread per tensor): on 4 warps the static
# check measured 185-224 registers (12% est. occupancy) and 8-28 B of spills for bf16 / fp16.
LRELU_BIAS_TILES_NCHW = (
    (128, TileConfig(16, 128, 8)),
    (32, TileConfig(64, 32, 8)),
    (0, TileConfig(128, 16, 8)),
)
LRELU_BIAS_TILES_CL = (
    (128, TileConfig(128, 16, 8)),
    (32, TileConfig(32, 64, 8)),
    (0, TileConfig(16, 128, 8)),
)
LRELU_BIAS_ITERS = 8
# Second stage of the deterministic bias-gradient reduction: rows of partial sums, summed in order.
REDUCE_BLOCK_R = 64
REDUCE_BLOCK_C = 64
REDUCE_WARPS = 4

# Activation dtypes the GPU kernels are built (and statically checked) for. fp64 runs only under the
# interpreter (gradcheck); on CUDA fp64 goes to the reference.
GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def lrelu_bias_tile(channels: int, pixels: int, channels_last: bool) -> TileConfig:
    """The lrelu_grad_bias tile: keyed by the contiguous dimension's length (pixels in NCHW, channels
    in channels_last), so short rows do not leave most lanes masked."""
    table, length = (LRELU_BIAS_TILES_CL, channels) if channels_last else (LRELU_BIAS_TILES_NCHW, pixels)
    for min_length, tile in table:
        if length >= min_length:
            return tile
    raise AssertionError("unreachable: the last entry takes every length")


def pixel_norm_tile(channels: int) -> tuple[TileConfig, bool]:
    """The tile for ``channels`` and whether the channels fit in one block (else the 2-pass loop)."""
    for tile in PIXEL_NORM_TILES:
        if channels <= tile.block_c:
            return tile, True
    return LOOP_TILE, False


# ----------------------------------------------------------------------------------------------------
# Device code


@triton.jit
def _to_compute(v, COMPUTE_FP64: tl.constexpr):
    if COMPUTE_FP64:
        return tl.cast(v, tl.float64)
    else:
        return tl.cast(v, tl.float32)


@triton.jit
def _tile_offsets(base, c, p, C, S, CHANNELS_LAST: tl.constexpr):
    # c [BLOCK_C], p [BLOCK_P] -> [BLOCK_C, BLOCK_P] element offsets (int64 through ``base``)
    if CHANNELS_LAST:
        return base + p[None, :] * C + c[:, None]
    else:
        return base + c[:, None] * S + p[None, :]


@triton.jit
def _add_bias(x, b, x_ptr, COMPUTE_FP64: tl.constexpr):
    # x + b rounded to the activation dtype, as the unfused reference computes it (fp16 x + b in
    # fp16): a sum beyond the dtype's range (fp16: 65504) becomes +-inf here too, so pixel norm returns
    # NaN for that pixel like the reference and the training NaN guard sees the overflow. Without the
    # rounding the fp32 sum stayed finite and the normalisation hid it. A no-op for fp32/fp64 x.
    return _to_compute((x + b).to(x_ptr.dtype.element_ty), COMPUTE_FP64)


@triton.jit
def bias_lrelu_fwd_kernel(
    x_ptr,
    bias_ptr,
    out_ptr,
    numel,
    C,
    S,
    negative_slope,
    CHANNELS_LAST: tl.constexpr,
    COMPUTE_FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """out = lrelu(x + bias[c]) over a flat dense tensor; the channel of each element from the layout."""
    slope = _to_compute(negative_slope, COMPUTE_FP64)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    if CHANNELS_LAST:
        c = offs % C
    else:
        c = (offs // S) % C
    x = _to_compute(tl.load(x_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
    b = _to_compute(tl.load(bias_ptr + c, mask=mask, other=0.0), COMPUTE_FP64)
    v = _add_bias(x, b, x_ptr, COMPUTE_FP64)
    y = tl.where(v > 0, v, v * slope)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def lrelu_grad_kernel(
    grad_ptr,
    out_ptr,
    grad_in_ptr,
    numel,
    negative_slope,
    COMPUTE_FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """grad_in = grad * (out > 0 ? 1 : slope); out > 0 iff x + b > 0 for any slope in [0, 1]."""
    slope = _to_compute(negative_slope, COMPUTE_FP64)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    g = _to_compute(tl.load(grad_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
    # Compare in the compute dtype: the interpreter keeps bf16 as raw 16-bit patterns, so a bf16
    # comparison there would order the bits, not the values.
    out = _to_compute(tl.load(out_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
    gx = tl.where(out > 0, g, g * slope)
    tl.store(grad_in_ptr + offs, gx.to(grad_in_ptr.dtype.element_ty), mask=mask)


@triton.jit
def lrelu_grad_bias_kernel(
    grad_ptr,
    out_ptr,
    grad_in_ptr,
    partial_ptr,
    C,
    S,
    grad_stride_n,
    grad_stride_c,
    grad_stride_p,
    pix_per_prog,
    negative_slope,
    CHANNELS_LAST: tl.constexpr,
    COMPUTE_FP64: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """grad_in = grad * (out > 0 ? 1 : slope), and partial[row, c] = sum of grad_in over this program's
    pixels (row = n * cdiv(S, pix_per_prog) + pid_p): stage one of the bias gradient (no atomics;
    ``sum_rows_kernel`` is stage two), so grad_in is not read again for it.

    Grid (cdiv(S, pix_per_prog), cdiv(C, BLOCK_C), N). out and grad_in are dense in out's layout;
    grad is read through its own [N, C, S] strides (any layout, including broadcast zeros), so it is
    never copied to out's layout first.
    """
    slope = _to_compute(negative_slope, COMPUTE_FP64)
    pid_p = tl.program_id(0)
    n = tl.program_id(2).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    base = n * C * S
    g_base = n * grad_stride_n
    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float64 if COMPUTE_FP64 else tl.float32)
    p_start = pid_p * pix_per_prog
    for p0 in range(p_start, p_start + pix_per_prog, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        mask = c_mask[:, None] & (p < S)[None, :]
        offs = _tile_offsets(base, c, p, C, S, CHANNELS_LAST)
        # int32 inside the image (the launcher checks the extent), int64 image base
        g_offs = g_base + (c[:, None] * grad_stride_c + p[None, :] * grad_stride_p)
        g = _to_compute(tl.load(grad_ptr + g_offs, mask=mask, other=0.0), COMPUTE_FP64)
        out = _to_compute(tl.load(out_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
        gx = tl.where(out > 0, g, g * slope)  # masked lanes: g = 0 -> 0
        gx = gx.to(grad_in_ptr.dtype.element_ty)
        tl.store(grad_in_ptr + offs, gx, mask=mask)
        acc += _to_compute(gx, COMPUTE_FP64)  # the stored (rounded) values: bias grad = sum of grad_in
    row = n * tl.num_programs(0) + pid_p
    tl.store(partial_ptr + row * C + c, tl.sum(acc, axis=1), mask=c_mask)


@triton.jit
def bias_act_pixel_norm_fwd_kernel(
    x_ptr,
    bias_ptr,
    out_ptr,
    rstd_ptr,
    C,
    S,
    negative_slope,
    eps,
    CHANNELS_LAST: tl.constexpr,
    COMPUTE_FP64: tl.constexpr,
    ONE_C_BLOCK: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """a = lrelu(x + b); r = rsqrt(mean_c a^2 + eps); out = a * r; rstd[n, p] = r (saved for backward).

    Grid (cdiv(S, BLOCK_P), N). With ONE_C_BLOCK the whole channel vector of BLOCK_P pixels is one
    register tile (one read of x); else two passes over channel blocks (sum of squares, then scale),
    the second re-reading x tiles the first just touched (L2 hits in practice).
    """
    slope = _to_compute(negative_slope, COMPUTE_FP64)
    n = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P]
    p_mask = p < S
    base = n * C * S  # int64: first element of image n
    cr = tl.arange(0, BLOCK_C)  # [BLOCK_C]
    if ONE_C_BLOCK:
        mask = (cr < C)[:, None] & p_mask[None, :]
        offs = _tile_offsets(base, cr, p, C, S, CHANNELS_LAST)
        x = _to_compute(tl.load(x_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
        b = _to_compute(tl.load(bias_ptr + cr, mask=cr < C, other=0.0), COMPUTE_FP64)
        v = _add_bias(x, b[:, None], x_ptr, COMPUTE_FP64)
        a = tl.where(v > 0, v, v * slope)  # masked lanes: 0
        r = 1.0 / tl.sqrt(tl.sum(a * a, axis=0) / C + eps)  # [BLOCK_P]
        tl.store(out_ptr + offs, (a * r[None, :]).to(out_ptr.dtype.element_ty), mask=mask)
    else:
        sumsq = tl.zeros([BLOCK_P], dtype=tl.float64 if COMPUTE_FP64 else tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cr
            mask = (c < C)[:, None] & p_mask[None, :]
            offs = _tile_offsets(base, c, p, C, S, CHANNELS_LAST)
            x = _to_compute(tl.load(x_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
            b = _to_compute(tl.load(bias_ptr + c, mask=c < C, other=0.0), COMPUTE_FP64)
            v = _add_bias(x, b[:, None], x_ptr, COMPUTE_FP64)
            a = tl.where(v > 0, v, v * slope)
            sumsq += tl.sum(a * a, axis=0)
        r = 1.0 / tl.sqrt(sumsq / C + eps)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cr
            mask = (c < C)[:, None] & p_mask[None, :]
            offs = _tile_offsets(base, c, p, C, S, CHANNELS_LAST)
            x = _to_compute(tl.load(x_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
            b = _to_compute(tl.load(bias_ptr + c, mask=c < C, other=0.0), COMPUTE_FP64)
            v = _add_bias(x, b[:, None], x_ptr, COMPUTE_FP64)
            a = tl.where(v > 0, v, v * slope)
            tl.store(out_ptr + offs, (a * r[None, :]).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + n * S + p, r, mask=p_mask)


@triton.jit
def bias_act_pixel_norm_bwd_kernel(
    grad_ptr,
    x_ptr,
    bias_ptr,
    rstd_ptr,
    grad_x_ptr,
    partial_ptr,
    C,
    S,
    negative_slope,
    CHANNELS_LAST: tl.constexpr,
    COMPUTE_FP64: tl.constexpr,
    ONE_C_BLOCK: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """Backward of the pixel-norm epilogue, recomputing a = lrelu(x + b) from the saved x and rstd r:

        g_a = r * g - a * r^3 * mean_c(g * a);   g_x = g_a * (x + b > 0 ? 1 : slope)

    and partial[row, c] = sum over this program's pixels of g_x (row = n * cdiv(S, BLOCK_P) + pid):
    stage one of the deterministic bias gradient (no atomics; ``sum_rows_kernel`` is stage two).

    x + b is recomputed in fp32 here, not rounded to the activation dtype as in the forward: the
    rounding only matters where the sum overflows, and there the forward already returned NaN (the
    loss is non-finite and the step is rejected); the extra casts spilled 8 B on sm_90 in the fp16/bf16
    channels_last 256x16 tile (static check).
    """
    slope = _to_compute(negative_slope, COMPUTE_FP64)
    pid_p = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P]
    p_mask = p < S
    base = n * C * S
    row = n * tl.num_programs(0) + pid_p
    cr = tl.arange(0, BLOCK_C)
    r = _to_compute(tl.load(rstd_ptr + n * S + p, mask=p_mask, other=0.0), COMPUTE_FP64)  # [BLOCK_P]
    if ONE_C_BLOCK:
        c_mask = cr < C
        mask = c_mask[:, None] & p_mask[None, :]
        offs = _tile_offsets(base, cr, p, C, S, CHANNELS_LAST)
        x = _to_compute(tl.load(x_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
        g = _to_compute(tl.load(grad_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
        b = _to_compute(tl.load(bias_ptr + cr, mask=c_mask, other=0.0), COMPUTE_FP64)
        v = x + b[:, None]
        a = tl.where(v > 0, v, v * slope)
        dot = tl.sum(g * a, axis=0) / C  # [BLOCK_P]
        g_a = g * r[None, :] - a * (r * r * r * dot)[None, :]
        g_v = tl.where(v > 0, g_a, g_a * slope)  # masked lanes: g = a = 0 -> 0
        tl.store(grad_x_ptr + offs, g_v.to(grad_x_ptr.dtype.element_ty), mask=mask)
        tl.store(partial_ptr + row * C + cr, tl.sum(g_v, axis=1), mask=c_mask)
    else:
        dot = tl.zeros([BLOCK_P], dtype=tl.float64 if COMPUTE_FP64 else tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cr
            mask = (c < C)[:, None] & p_mask[None, :]
            offs = _tile_offsets(base, c, p, C, S, CHANNELS_LAST)
            x = _to_compute(tl.load(x_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
            g = _to_compute(tl.load(grad_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
            b = _to_compute(tl.load(bias_ptr + c, mask=c < C, other=0.0), COMPUTE_FP64)
            v = x + b[:, None]
            a = tl.where(v > 0, v, v * slope)
            dot += tl.sum(g * a, axis=0)
        coef = r * r * r * (dot / C)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cr
            c_mask = c < C
            mask = c_mask[:, None] & p_mask[None, :]
            offs = _tile_offsets(base, c, p, C, S, CHANNELS_LAST)
            x = _to_compute(tl.load(x_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
            g = _to_compute(tl.load(grad_ptr + offs, mask=mask, other=0.0), COMPUTE_FP64)
            b = _to_compute(tl.load(bias_ptr + c, mask=c_mask, other=0.0), COMPUTE_FP64)
            v = x + b[:, None]
            a = tl.where(v > 0, v, v * slope)
            g_a = g * r[None, :] - a * coef[None, :]
            g_v = tl.where(v > 0, g_a, g_a * slope)
            tl.store(grad_x_ptr + offs, g_v.to(grad_x_ptr.dtype.element_ty), mask=mask)
            tl.store(partial_ptr + row * C + c, tl.sum(g_v, axis=1), mask=c_mask)


@triton.jit
def sum_rows_kernel(
    partial_ptr,
    out_ptr,
    R,
    C,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """out[c] = sum_r partial[r, c], rows visited in a fixed order: a deterministic reduction."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=partial_ptr.dtype.element_ty)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        mask = (r < R)[:, None] & c_mask[None, :]
        acc += tl.load(partial_ptr + r.to(tl.int64)[:, None] * C + c[None, :], mask=mask, other=0.0)
    tl.store(out_ptr + c, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=c_mask)


# ----------------------------------------------------------------------------------------------------
# Launch helpers (no autograd). Inputs are dense; ``dense_layout`` makes them so.


def _geometry(x: torch.Tensor) -> tuple[int, int, int]:
    """(N, C, S) of a dense x as addressed by the kernels."""
    if x.ndim == 2:
        return 1, x.shape[1], x.shape[0]
    n, c, h, w = x.shape
    return n, c, h * w


# CUDA's limit on grid dimensions y and z (x allows 2**31 - 1): the image index runs on one of them.
MAX_GRID_YZ = 65535


def check_image_extent(op: str, n: int, c: int, s: int) -> None:
    """Raise ValueError naming ``op`` unless [N, C, S] fits the tiled kernels' addressing: offsets inside
    one image (C x S elements) are int32 (only the image base is int64) and the image index is a grid
    y/z coordinate. Shape arithmetic only, so it runs before any allocation (meta tensors too)."""
    if c * s >= 2**31:
        raise ValueError(
            f"{op}: one image of {c} x {s} = {c * s} elements reaches 2**31 (int32 offsets inside an "
            "image); split the batch's images or use impl='ref'"
        )
    if n > MAX_GRID_YZ:
        raise ValueError(
            f"{op}: {n} images exceed the {MAX_GRID_YZ} grid rows; split the batch or use impl='ref'"
        )


def _bias_or_zeros(bias: torch.Tensor | None, channels: int, like: torch.Tensor) -> torch.Tensor:
    # A missing bias is a zero bias: one tiny buffer instead of a HAS_BIAS variant of every kernel.
    # Parameters of any dtype are read as the compute dtype (fp32; fp64 under gradcheck), which keeps
    # the set of compiled variants to the statically checked ones.
    if bias is None:
        return torch.zeros(channels, dtype=_compute_dtype(like), device=like.device)
    return bias.to(_compute_dtype(like)).contiguous()


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def bias_lrelu_forward(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float) -> torch.Tensor:
    """lrelu(x + bias) in one pass; the output has x's dense layout and dtype."""
    x, channels_last = dense_layout(x)
    _, c, s = _geometry(x)
    out = torch.empty_like(x)
    numel = x.numel()
    if numel:
        grid = (triton.cdiv(numel, FLAT_BLOCK),)
        bias_lrelu_fwd_kernel[grid](
            x,
            _bias_or_zeros(bias, c, x),
            out,
            numel,
            c,
            s,
            float(negative_slope),
            CHANNELS_LAST=channels_last,
            COMPUTE_FP64=x.dtype == torch.float64,
            BLOCK=FLAT_BLOCK,
            num_warps=FLAT_WARPS,
        )
    return out


def lrelu_grad(grad: torch.Tensor, out: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """grad * lrelu'(.) decided by out > 0; grad is brought to out's layout, the result has it too."""
    out, channels_last = dense_layout(out)
    grad = grad.to(out.dtype)
    if grad.stride() != out.stride():
        fmt = torch.channels_last if channels_last and out.ndim == 4 else torch.contiguous_format
        grad = grad.contiguous(memory_format=fmt)
    grad_in = torch.empty_like(out, dtype=grad.dtype)
    numel = out.numel()
    if numel:
        grid = (triton.cdiv(numel, FLAT_BLOCK),)
        lrelu_grad_kernel[grid](
            grad,
            out,
            grad_in,
            numel,
            float(negative_slope),
            COMPUTE_FP64=grad.dtype == torch.float64,
            BLOCK=FLAT_BLOCK,
            num_warps=FLAT_WARPS,
        )
    return grad_in


def _nsp_strides(t: torch.Tensor) -> tuple[int, int, int] | None:
    """t's strides as [N, C, S] (S = H*W), or None when H and W cannot be merged into one stride."""
    if t.ndim == 2:  # one image of N pixels with C channels
        return 0, t.stride(1), t.stride(0)
    sn, sc, sh, sw = t.stride()
    h, w = t.shape[2:]
    if h == 1:
        return sn, sc, sw
    if w == 1:
        return sn, sc, sh
    if sh == sw * w:
        return sn, sc, sw
    return None


def lrelu_grad_bias(
    grad: torch.Tensor, out: torch.Tensor, negative_slope: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad * lrelu'(.) in out's layout and dtype, its sum over N, H, W in the compute dtype): the D
    path's backward in one pass over grad and out, the bias gradient reduced deterministically."""
    out, channels_last = dense_layout(out)
    grad = grad.to(out.dtype)
    n, c, s = _geometry(out)
    strides = _nsp_strides(grad)
    if strides is None:
        grad = grad.contiguous()
        strides = _nsp_strides(grad)
    check_image_extent("lrelu_grad_bias", n, c, s)
    grad_in = torch.empty_like(out)
    grad_bias = torch.zeros(c, dtype=_compute_dtype(out), device=out.device)
    if out.numel():
        tile, pix_per_prog, p_progs = lrelu_grad_bias_grid(c, s, channels_last)
        partial = torch.empty((n * p_progs, c), dtype=_compute_dtype(out), device=out.device)
        lrelu_grad_bias_kernel[(p_progs, triton.cdiv(c, tile.block_c), n)](
            grad,
            out,
            grad_in,
            partial,
            c,
            s,
            *strides,
            pix_per_prog,
            float(negative_slope),
            CHANNELS_LAST=channels_last,
            COMPUTE_FP64=out.dtype == torch.float64,
            BLOCK_C=tile.block_c,
            BLOCK_P=tile.block_p,
            num_warps=tile.num_warps,
        )
        sum_rows(partial, grad_bias)
    return grad_in, grad_bias


def lrelu_grad_bias_grid(c: int, s: int, channels_last: bool) -> tuple[TileConfig, int, int]:
    """(tile, pixels per program, programs along the pixels) of ``lrelu_grad_bias``."""
    tile = lrelu_bias_tile(c, s, channels_last)
    pix_per_prog = tile.block_p * min(LRELU_BIAS_ITERS, triton.cdiv(s, tile.block_p))
    return tile, pix_per_prog, triton.cdiv(s, pix_per_prog)


def lrelu_grad_bias_partial_rows(out: torch.Tensor) -> int:
    """Rows of the partial-sum scratch ``lrelu_grad_bias`` writes for out (for the traffic counter)."""
    out, channels_last = dense_layout(out)
    n, c, s = _geometry(out)
    return n * lrelu_grad_bias_grid(c, s, channels_last)[2]


def bias_act_pixel_norm_forward(
    x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_norm(lrelu(x + bias)), rstd [N, H*W] (or [N]) in the compute dtype)."""
    x, channels_last = dense_layout(x)
    n, c, s = _geometry(x)
    check_image_extent("bias_act_pixel_norm", n, c, s)
    out = torch.empty_like(x)
    rstd = torch.empty(rstd_shape(x), dtype=_compute_dtype(x), device=x.device)
    if x.numel():
        tile, one_block = pixel_norm_tile(c)
        grid = (triton.cdiv(s, tile.block_p), n)
        bias_act_pixel_norm_fwd_kernel[grid](
            x,
            _bias_or_zeros(bias, c, x),
            out,
            rstd,
            c,
            s,
            float(negative_slope),
            float(eps),
            CHANNELS_LAST=channels_last,
            COMPUTE_FP64=x.dtype == torch.float64,
            ONE_C_BLOCK=one_block,
            BLOCK_C=tile.block_c,
            BLOCK_P=tile.block_p,
            num_warps=tile.num_warps,
        )
    return out, rstd


def rstd_shape(x: torch.Tensor) -> tuple[int, ...]:
    """Shape of the saved per-pixel rsqrt: [N, H, W] for 4-D x, [N] for 2-D x."""
    return (x.shape[0], *x.shape[2:])


def bias_act_pixel_norm_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    bias: torch.Tensor | None,
    rstd: torch.Tensor,
    negative_slope: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x in x's layout and dtype, grad_bias [C] fp32 (fp64 for fp64 x), summed deterministically)."""
    x, channels_last = dense_layout(x)
    n, c, s = _geometry(x)
    check_image_extent("bias_act_pixel_norm_backward", n, c, s)
    grad = grad.to(x.dtype)
    if grad.stride() != x.stride():
        fmt = torch.channels_last if channels_last and x.ndim == 4 else torch.contiguous_format
        grad = grad.contiguous(memory_format=fmt)
    grad_x = torch.empty_like(x, dtype=grad.dtype)
    grad_bias = torch.zeros(c, dtype=_compute_dtype(x), device=x.device)
    if x.numel():
        tile, one_block = pixel_norm_tile(c)
        p_blocks = triton.cdiv(s, tile.block_p)
        partial = torch.empty((n * p_blocks, c), dtype=_compute_dtype(x), device=x.device)
        bias_act_pixel_norm_bwd_kernel[(p_blocks, n)](
            grad,
            x,
            _bias_or_zeros(bias, c, x),
            rstd.contiguous(),
            grad_x,
            partial,
            c,
            s,
            float(negative_slope),
            CHANNELS_LAST=channels_last,
            COMPUTE_FP64=x.dtype == torch.float64,
            ONE_C_BLOCK=one_block,
            BLOCK_C=tile.block_c,
            BLOCK_P=tile.block_p,
            num_warps=tile.num_warps,
        )
        sum_rows(partial, grad_bias)
    return grad_x, grad_bias


def sum_rows(partial: torch.Tensor, out: torch.Tensor) -> None:
    """out[c] = sum_r partial[r, c] in a fixed order (stage two of a deterministic reduction)."""
    rows, c = partial.shape
    sum_rows_kernel[(triton.cdiv(c, REDUCE_BLOCK_C),)](
        partial, out, rows, c, BLOCK_R=REDUCE_BLOCK_R, BLOCK_C=REDUCE_BLOCK_C, num_warps=REDUCE_WARPS
    )


# ----------------------------------------------------------------------------------------------------
# Every launchable variant, for the static check: (kernel, signature, constexprs, num_warps).

_PTR = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def launch_configs() -> list[dict]:
    """Every (kernel, signature, constexprs, num_warps) the launch helpers above can use on a GPU."""
    configs: list[dict] = []
    for dtype in GPU_DTYPES:
        act = _PTR[dtype]
        for channels_last in (False, True):
            configs.append(
                {
                    "kernel": bias_lrelu_fwd_kernel,
                    "signature": {
                        "x_ptr": act,
                        "bias_ptr": "*fp32",
                        "out_ptr": act,
                        "numel": "i32",
                        "C": "i32",
                        "S": "i32",
                        "negative_slope": "fp32",
                    },
                    "constexprs": {
                        "CHANNELS_LAST": channels_last,
                        "COMPUTE_FP64": False,
                        "BLOCK": FLAT_BLOCK,
                    },
                    "num_warps": FLAT_WARPS,
                }
            )
            lrelu_bias_tiles = {t for _, t in LRELU_BIAS_TILES_NCHW + LRELU_BIAS_TILES_CL}
            for tile in sorted(lrelu_bias_tiles, key=lambda t: (t.block_c, t.block_p)):
                configs.append(
                    {
                        "kernel": lrelu_grad_bias_kernel,
                        "signature": {
                            "grad_ptr": act,
                            "out_ptr": act,
                            "grad_in_ptr": act,
                            "partial_ptr": "*fp32",
                            "C": "i32",
                            "S": "i32",
                            "grad_stride_n": "i32",
                            "grad_stride_c": "i32",
                            "grad_stride_p": "i32",
                            "pix_per_prog": "i32",
                            "negative_slope": "fp32",
                        },
                        "constexprs": {
                            "CHANNELS_LAST": channels_last,
                            "COMPUTE_FP64": False,
                            "BLOCK_C": tile.block_c,
                            "BLOCK_P": tile.block_p,
                        },
                        "num_warps": tile.num_warps,
                    }
                )
            tiles = [(t, True) for t in PIXEL_NORM_TILES] + [(LOOP_TILE, False)]
            for tile, one_block in tiles:
                tile_constexprs = {
                    "CHANNELS_LAST": channels_last,
                    "COMPUTE_FP64": False,
                    "ONE_C_BLOCK": one_block,
                    "BLOCK_C": tile.block_c,
                    "BLOCK_P": tile.block_p,
                }
                configs.append(
                    {
                        "kernel": bias_act_pixel_norm_fwd_kernel,
                        "signature": {
                            "x_ptr": act,
                            "bias_ptr": "*fp32",
                            "out_ptr": act,
                            "rstd_ptr": "*fp32",
                            "C": "i32",
                            "S": "i32",
                            "negative_slope": "fp32",
                            "eps": "fp32",
                        },
                        "constexprs": tile_constexprs,
                        "num_warps": tile.num_warps,
                    }
                )
                configs.append(
                    {
                        "kernel": bias_act_pixel_norm_bwd_kernel,
                        "signature": {
                            "grad_ptr": act,
                            "x_ptr": act,
                            "bias_ptr": "*fp32",
                            "rstd_ptr": "*fp32",
                            "grad_x_ptr": act,
                            "partial_ptr": "*fp32",
                            "C": "i32",
                            "S": "i32",
                            "negative_slope": "fp32",
                        },
                        "constexprs": tile_constexprs,
                        "num_warps": tile.num_warps,
                    }
                )
        configs.append(
            {
                "kernel": lrelu_grad_kernel,
                "signature": {
                    "grad_ptr": act,
                    "out_ptr": act,
                    "grad_in_ptr": act,
                    "numel": "i32",
                    "negative_slope": "fp32",
                },
                "constexprs": {"COMPUTE_FP64": False, "BLOCK": FLAT_BLOCK},
                "num_warps": FLAT_WARPS,
            }
        )
    configs.append(
        {
            "kernel": sum_rows_kernel,
            "signature": {"partial_ptr": "*fp32", "out_ptr": "*fp32", "R": "i32", "C": "i32"},
            "constexprs": {"BLOCK_R": REDUCE_BLOCK_R, "BLOCK_C": REDUCE_BLOCK_C},
            "num_warps": REDUCE_WARPS,
        }
    )
    return configs
