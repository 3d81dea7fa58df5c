"""Triton implicit-GEMM convolution with the ProGAN epilogue in registers: conv + bias + lrelu (+ pixel norm).

Device code and launch helpers only; autograd, dispatch and validation live in
``fastprogan.ops.conv2d_bias_act``. Every launch picks its config from ``CONV_TILES`` (``launch_configs``
lists every variant), so the static GPU check compiles exactly what runs.

GEMM view of a KH x KW conv (stride STRIDE, zero padding PAD): M = N * OH * OW output pixels, N = C_out,
K = KH * KW * C_in. A program owns a [BLOCK_M pixels, BLOCK_N output channels] tile; it walks the
KH * KW taps (unrolled) and, per tap, the input channels in BLOCK_K slices: the A tile is the input
pixels under that tap ([BLOCK_M, BLOCK_K], out-of-image rows masked to 0 = the zero padding), the B
tile the packed weights ``w_packed[(kh * KW + kw) * C_in + ci, co]``. ``tl.dot`` with an fp32
accumulator (fp64 under the interpreter for gradcheck); fp32 operands with ``input_precision="ieee"``
(TF32 off, the precision policy); fp16 / bf16 operands on tensor cores. Under the interpreter bf16
operands are upcast to fp32 first (its bf16 dot multiplies raw bit patterns: shared/NO_GPU.md).

Activations are addressed through their (n, c, h, w) strides, so NCHW and channels_last (NHWC, the
fast layout: a BLOCK_K slice of one pixel is contiguous) both work without a copy.

Epilogue (EPILOGUE constexpr): 0 = none (the plain conv of the input gradient and of the double
backward), 1 = + bias, lrelu, 2 = + bias, lrelu, pixel norm over the output channels (needs the whole
channel vector in one tile: BLOCK_N >= C_out, C_out <= 128), which also stores the per-pixel rsqrt.
Prologue (PROLOGUE constexpr): the A operand is multiplied by lrelu' as it is loaded, so no masked
gradient is ever written: 1 = from a full mask tensor (``mask > 0 ? 1 : slope``; the saved output,
read by the penalty's differentiable input gradient), 2 = from the forward's sign bits.

Sign bits: the lrelu forward (EPILOGUE 1) also writes ``bits [N*OH*OW, WORDS] int32`` (WORDS =
cdiv(C_out, 32); bit c % 32 of word c // 32 of pixel m = pre-activation of channel c > 0), 1/32 of an
fp32 activation (1/16 of bf16). The first-order backward reads them instead of the output: the input
gradient (PROLOGUE 2) and the weight gradient (``conv2d_weight_grad_kernel``, split-K over the pixels
with fp32 partials reduced in a fixed order, the bias gradient folded in) each read g once and the bits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# ----------------------------------------------------------------------------------------------------
# Configs (the static check compiles every entry of launch_configs() for sm_80 and sm_90).


@dataclass(frozen=True)
class ConvTile:
    """A [BLOCK_M, BLOCK_N] output tile with BLOCK_K input channels per dot, on num_warps warps."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int


# Keyed by C_out (BLOCK_N covers the output channels, so the pixel norm completes in registers) and
# C_in (BLOCK_K: input channels per dot; 16 is the tensor-core minimum). ProGAN's 256-1024 px layers
# have 16-64 channels; 128 is the largest tile whose pixel norm is still one register tile.
# M tiles of 64 pixels keep the fp32 accumulator at 64 x 128 / 128 threads = 64 registers per thread.
CONV_BLOCK_N = (16, 32, 64, 128)
CONV_BLOCK_K = 16
CONV_BLOCK_M = 64
CONV_STAGES = 1  # what the static check compiles (and so what launches)
MAX_FUSED_C_OUT = 128  # BLOCK_N = C_out up to here; above, the kernel is not dispatched
KERNEL_SHAPES = ((3, 1, 1), (4, 2, 1))  # (kernel size, stride, padding): 3x3 conv, 4x4 stride-2 conv
GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
EPILOGUES = {"none": 0, "lrelu": 1, "lrelu_pixel_norm": 2}
PROLOGUES = {"none": 0, "mask": 1, "bits": 2}
WGRAD_BLOCK_CI = (16, 32)  # input channels per weight-gradient program (the dot's M side, >= 16)


def sign_words(c_out: int) -> int:
    """int32 words of sign bits per pixel for ``c_out`` channels."""
    return -(-c_out // 32)


def conv_tile(c_in: int, c_out: int, tile_n: bool = False) -> ConvTile:
    """The tile for ``c_in -> c_out`` channels (c_out <= MAX_FUSED_C_OUT, or any c_out with ``tile_n``:
    a plain conv without epilogue, whose output channels may span several programs)."""
    if tile_n:
        c_out = min(c_out, MAX_FUSED_C_OUT)
    if c_out > MAX_FUSED_C_OUT:
        raise ValueError(f"conv2d_bias_act kernel: C_out={c_out} > {MAX_FUSED_C_OUT} (BLOCK_N = C_out)")
    block_n = next(b for b in CONV_BLOCK_N if c_out <= b)
    return ConvTile(CONV_BLOCK_M, block_n, CONV_BLOCK_K, conv_warps(block_n))


def upscale_tile(c_in: int, c_out: int, dtype: torch.dtype, tile_n: bool = False) -> ConvTile:
    """The parity kernel's tile: conv_tile's, except in fp32 (the FMA dot, not tensor cores), where the
    static check measured spills for 16 channels on 4 warps (8-16 B, sm_90) and on 8 warps (24 B,
    sm_80), and for the 128-channel pixel-norm tile on 8 warps (40 B, sm_80): fp32 takes the 32-channel
    tile for up to 32 channels and 16 warps for 128 (82-128 registers, no spills)."""
    tile = conv_tile(c_in, c_out, tile_n)
    if dtype != torch.float32 and dtype != torch.float64:
        # fp16 / bf16 128-channel tiles on 16 warps: on 8 warps the pixel-norm tile (with the
        # prologue arguments) spilled 16 B on sm_80 at ptxas's 128 registers (static check)
        return tile if tile.block_n < 128 else ConvTile(tile.block_m, 128, tile.block_k, 16)
    block_n = max(tile.block_n, 32)
    return ConvTile(tile.block_m, block_n, tile.block_k, 16 if block_n == 128 else conv_warps(block_n))


def conv_warps(block_n: int) -> int:
    """4 warps for 16 output channels, 8 above: on 4 warps the 64 x 64 and 64 x 128 tiles measured
    227-255 registers (12% est. occupancy) on sm_80, and the fp32 64 x 32 plain conv spilled 8 B on
    sm_90 (static check)."""
    return 4 if block_n <= 16 else 8


# Under the interpreter every dot runs in fp32: its bf16 dot multiplies raw bit patterns
# (shared/NO_GPU.md). A module constant, not a launch constexpr, so the launches match the GPU table.
INTERPRETER_FP32_DOT = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")


# ----------------------------------------------------------------------------------------------------
# Device code


@triton.jit
def _lrelu_prime_tile(
    t, mask_ptr, offs, pix, ch, valid, slope, words, PROLOGUE: tl.constexpr, acc_dtype: tl.constexpr
):
    """t * lrelu' in acc_dtype: PROLOGUE 1 from the mask tensor at ``offs`` (t's offsets), 2 from the
    sign bits of pixel ``pix`` [R] and channel ``ch`` [C] (t is [R, C], valid its load mask)."""
    tf = t.to(acc_dtype)
    if PROLOGUE == 1:
        # compare in the compute dtype (the interpreter orders bf16 by bit pattern)
        positive = tl.load(mask_ptr + offs, mask=valid, other=0.0).to(acc_dtype) > 0
    else:
        word = tl.load(mask_ptr + pix[:, None] * words + (ch // 32)[None, :], mask=valid, other=0)
        positive = ((word >> (ch % 32)[None, :]) & 1) != 0
    return tl.where(positive, tf, tf * slope)


@triton.jit
def _dot_acc(acc, a, b, COMPUTE_FP64: tl.constexpr, DOT_FP32: tl.constexpr):
    """acc + a @ b: fp64 (gradcheck), IEEE fp32 (TF32 off), or fp16 / bf16 on tensor cores."""
    if COMPUTE_FP64:
        return tl.dot(a.to(tl.float64), b.to(tl.float64), acc)
    elif DOT_FP32 or INTERPRETER_FP32_DOT:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)  # fp16 / bf16 on tensor cores, fp32 accumulation


@triton.jit
def _accumulate_tap(
    acc, x_ptr, mask_ptr, w_ptr, row_base, pix, valid, w_row0, co, co_mask, C_in, C_out, sxc, slope, WORDS,
    PROLOGUE: tl.constexpr, COMPUTE_FP64: tl.constexpr, DOT_FP32: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """acc + one tap of an implicit-GEMM conv: the input rows ``row_base`` [BLOCK_M] (``valid``), times
    lrelu' (PROLOGUE), against packed weight rows ``w_row0 + ci``, in BLOCK_K input-channel slices."""
    acc_dtype = tl.float64 if COMPUTE_FP64 else tl.float32
    for c0 in range(0, C_in, BLOCK_K):
        ci = c0 + tl.arange(0, BLOCK_K)
        ci_mask = ci < C_in
        a_mask = valid[:, None] & ci_mask[None, :]
        a_offs = row_base[:, None] + ci[None, :] * sxc
        a = tl.load(x_ptr + a_offs, mask=a_mask, other=0.0)
        if PROLOGUE != 0:
            a = _lrelu_prime_tile(a, mask_ptr, a_offs, pix, ci, a_mask, slope, WORDS, PROLOGUE, acc_dtype)
            a = a.to(x_ptr.dtype.element_ty)
        b = tl.load(
            w_ptr + (w_row0 + ci)[:, None] * C_out + co[None, :],
            mask=ci_mask[:, None] & co_mask[None, :],
            other=0.0,
        )
        acc = _dot_acc(acc, a, b, COMPUTE_FP64, DOT_FP32)
    return acc


@triton.jit
def conv2d_act_kernel(
    x_ptr,
    mask_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    rstd_ptr,
    bits_ptr,
    H,
    W,
    C_in,
    OH,
    OW,
    C_out,
    M,
    WORDS,
    sxn,
    sxc,
    sxh,
    sxw,
    son,
    soc,
    soh,
    sow,
    negative_slope,
    eps,
    KSIZE: tl.constexpr,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    PROLOGUE: tl.constexpr,
    EPILOGUE: tl.constexpr,
    COMPUTE_FP64: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[m, co] = epilogue(sum_{kh, kw, ci} x'[n, ci, oh*S-P+kh, ow*S-P+kw] * w[(kh*K+kw)*C_in+ci, co]).

    x' = x, or x * lrelu' (PROLOGUE 1: mask with x's strides; 2: sign bits [N*H*W, WORDS] of x's
    pixels). Grid (cdiv(M, BLOCK_M), cdiv(C_out, BLOCK_N)). rstd [M] is written with EPILOGUE == 2,
    the sign bits [M, WORDS] with EPILOGUE == 1 (one program covers C_out there).
    """
    acc_dtype = tl.float64 if COMPUTE_FP64 else tl.float32
    slope = tl.cast(negative_slope, acc_dtype)
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] output pixels
    co = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] output channels
    m_mask = m < M
    co_mask = co < C_out
    ow = m % OW
    oh = (m // OW) % OH
    n = m // (OW * OH)  # int32 offsets: the launcher refuses tensors of 2**31 elements or more
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=acc_dtype)
    # A rolled loop over the taps: unrolling them (tl.static_range) made ptxas keep every tap's
    # addresses live: 200-255 registers and up to 4 KB of spills (static check), compiles of 15-130 s.
    for tap in range(0, KSIZE * KSIZE):
        kh = tap // KSIZE
        kw = tap % KSIZE
        ih = oh * STRIDE - PAD + kh
        iw = ow * STRIDE - PAD + kw
        valid = m_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        row_base = n * sxn + ih * sxh + iw * sxw  # [BLOCK_M] (garbage where not valid: masked)
        pix = (n * H + ih) * W + iw  # the sign bits' pixel index (PROLOGUE 2)
        acc = _accumulate_tap(
            acc, x_ptr, mask_ptr, w_ptr, row_base, pix, valid, tap * C_in, co, co_mask, C_in, C_out, sxc,
            slope, WORDS, PROLOGUE, COMPUTE_FP64, DOT_FP32, BLOCK_K,
        )  # fmt: skip
    # The epilogue inline (not _epilogue_store): with the helper, ptxas spilled 8-32 B in the sm_80
    # pixel-norm variants (static check), inline none.
    y = acc
    if EPILOGUE >= 1:
        bias = tl.load(bias_ptr + co, mask=co_mask, other=0.0).to(acc_dtype)
        v = acc + bias[None, :]
        y = tl.where(v > 0, v, v * slope)  # masked channels: 0
        if EPILOGUE == 1:
            _store_sign_bits(v, bits_ptr, m, m_mask, co, co_mask, WORDS, BLOCK_N)
        if EPILOGUE == 2:
            r = 1.0 / tl.sqrt(tl.sum(y * y, axis=1) / C_out + eps)  # [BLOCK_M]
            y = y * r[:, None]
            tl.store(rstd_ptr + m, r, mask=m_mask)
    out_offs = (n * son + oh * soh + ow * sow)[:, None] + co[None, :] * soc
    tl.store(out_ptr + out_offs, y.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & co_mask[None, :])


@triton.jit
def _store_sign_bits(v, bits_ptr, m, m_mask, co, co_mask, WORDS, BLOCK_N: tl.constexpr):
    """bits[m, c // 32] bit c % 32 = v[m, c] > 0, for the tile's channels (one program covers C_out)."""
    bit = tl.where((v > 0) & co_mask[None, :], 1, 0).to(tl.int32) << (co % 32)[None, :]
    for j in tl.static_range((BLOCK_N + 31) // 32):
        word = tl.sum(tl.where((co // 32 == j)[None, :], bit, 0), axis=1)  # distinct bits: sum = or
        tl.store(bits_ptr + m * WORDS + j, word, mask=m_mask & ((m * 0 + j) < WORDS))


@triton.jit
def _epilogue_store(
    acc,
    bias_ptr,
    out_ptr,
    out_offs,
    rstd_ptr,
    r_offs,
    m_mask,
    co,
    co_mask,
    C_out,
    slope,
    eps,
    EPILOGUE: tl.constexpr,
):
    """Bias + lrelu (+ pixel norm over the tile's channels, rstd stored at r_offs) on the accumulator,
    then the only store of the output."""
    y = acc
    if EPILOGUE >= 1:
        bias = tl.load(bias_ptr + co, mask=co_mask, other=0.0).to(acc.dtype)
        v = acc + bias[None, :]
        y = tl.where(v > 0, v, v * slope)  # masked channels: 0
        if EPILOGUE == 2:
            r = 1.0 / tl.sqrt(tl.sum(y * y, axis=1) / C_out + eps)  # [BLOCK_M]
            y = y * r[:, None]
            tl.store(rstd_ptr + r_offs, r, mask=m_mask)
    tl.store(out_ptr + out_offs, y.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & co_mask[None, :])


@triton.jit
def upscale_conv2d_act_kernel(
    x_ptr,
    mask_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    rstd_ptr,
    H,
    W,
    C_in,
    C_out,
    M,
    WORDS,
    sxn,
    sxc,
    sxh,
    sxw,
    son,
    soc,
    soh,
    sow,
    negative_slope,
    eps,
    PROLOGUE: tl.constexpr,
    EPILOGUE: tl.constexpr,
    COMPUTE_FP64: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """conv_transpose2d(x', w, stride 2, pad 1) + epilogue, as four 2x2 parity convs of the low-res input.

    The nearest 2x upsample + 3x3 conv of the generator (folded 4x4 weights), and, with EPILOGUE 0,
    the input gradient of the stride-2 4x4 conv (D's conv1_down): x' = x * lrelu' as conv2d_act_kernel's
    PROLOGUE (1: mask with x's strides; 2: sign bits [N*H*W, WORDS]).

    Output pixel (2a + py, 2b + px) = sum over the 2x2 taps (ty, tx) of x'[a - 1 + py + ty, b - 1 + px + tx]
    times the parity's folded weights w[((py*2 + px)*4 + ty*2 + tx) * C_in + ci, co] (the 4x4
    transposed-conv kernel, taken at ky = 3 - py - 2ty, kx = 3 - px - 2tx): no upsampled tensor, no
    zero taps. Grid (cdiv(M, BLOCK_M), cdiv(C_out, BLOCK_N), 4 parities); M = N*H*W low-res pixels;
    the four parity programs of one tile read the same input rows (L2 hits). rstd is [N, 2H, 2W].
    """
    acc_dtype = tl.float64 if COMPUTE_FP64 else tl.float32
    slope = tl.cast(negative_slope, acc_dtype)
    parity = tl.program_id(2)
    py = parity // 2
    px = parity % 2
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # low-res pixels
    co = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = m < M
    co_mask = co < C_out
    b = m % W
    a = (m // W) % H
    n = m // (W * H)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=acc_dtype)
    for tap in range(0, 4):
        ih = a - 1 + py + tap // 2
        iw = b - 1 + px + tap % 2
        valid = m_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        row_base = n * sxn + ih * sxh + iw * sxw
        pix = (n * H + ih) * W + iw
        acc = _accumulate_tap(
            acc, x_ptr, mask_ptr, w_ptr, row_base, pix, valid, (parity * 4 + tap) * C_in, co, co_mask, C_in,
            C_out, sxc, slope, WORDS, PROLOGUE, COMPUTE_FP64, DOT_FP32, BLOCK_K,
        )  # fmt: skip
    oh = 2 * a + py
    ow = 2 * b + px
    out_offs = (n * son + oh * soh + ow * sow)[:, None] + co[None, :] * soc
    r_offs = (n * (2 * H) + oh) * (2 * W) + ow
    _epilogue_store(
        acc, bias_ptr, out_ptr, out_offs, rstd_ptr, r_offs, m_mask, co, co_mask, C_out, slope, eps, EPILOGUE
    )


@triton.jit
def conv2d_weight_grad_kernel(
    g_ptr,
    bits_ptr,
    x_ptr,
    gw_ptr,
    gb_ptr,
    H,
    W,
    C_in,
    OH,
    OW,
    C_out,
    M,
    WORDS,
    TILES_PER_SPLIT,
    sgn,
    sgc,
    sgh,
    sgw,
    sxn,
    sxc,
    sxh,
    sxw,
    negative_slope,
    KSIZE: tl.constexpr,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    COMPUTE_FP64: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Weight and bias gradient of lrelu(conv(x, w) + b) from g and the forward's sign bits.

    g' = g * lrelu'(bits) ([M, C_out], applied as g is loaded: no masked gradient is written). Program
    (split s, tap, input-channel block) sums its split's TILES_PER_SPLIT pixel tiles:
    gw_part[s, tap*C_in + ci, co] = sum_m x[n, ci, oh*S-P+kh, ow*S-P+kw] * g'[m, co] (the packed weight
    rows), gb_part[s, co] = sum_m g'[m, co] (stored by the tap-0, block-0 programs). fp32 partials
    (fp64 for gradcheck), summed over s by the launcher in a fixed order: deterministic, no atomics.
    Grid (splits, KSIZE*KSIZE, cdiv(C_in, BLOCK_K)); BLOCK_N covers C_out.
    """
    acc_dtype = tl.float64 if COMPUTE_FP64 else tl.float32
    slope = tl.cast(negative_slope, acc_dtype)
    split = tl.program_id(0)
    tap = tl.program_id(1)
    kh = tap // KSIZE
    kw = tap % KSIZE
    ci = tl.program_id(2) * BLOCK_K + tl.arange(0, BLOCK_K)  # [BLOCK_K] input channels
    co = tl.arange(0, BLOCK_N)
    ci_mask = ci < C_in
    co_mask = co < C_out
    acc = tl.zeros([BLOCK_K, BLOCK_N], dtype=acc_dtype)
    gb = tl.zeros([BLOCK_N], dtype=acc_dtype)
    mr = tl.arange(0, BLOCK_M)
    for t in range(0, TILES_PER_SPLIT):
        m = (split * TILES_PER_SPLIT + t) * BLOCK_M + mr  # [BLOCK_M] output pixels
        m_mask = m < M
        ow = m % OW
        oh = (m // OW) % OH
        n = m // (OW * OH)
        g_mask = m_mask[:, None] & co_mask[None, :]
        g_offs = (n * sgn + oh * sgh + ow * sgw)[:, None] + co[None, :] * sgc
        g = tl.load(g_ptr + g_offs, mask=g_mask, other=0.0)
        gm = _lrelu_prime_tile(g, bits_ptr, g_offs, m, co, g_mask, slope, WORDS, 2, acc_dtype)
        gb += tl.sum(gm, axis=0)
        ih = oh * STRIDE - PAD + kh
        iw = ow * STRIDE - PAD + kw
        valid = m_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_offs = ci[:, None] * sxc + (n * sxn + ih * sxh + iw * sxw)[None, :]
        xt = tl.load(x_ptr + x_offs, mask=ci_mask[:, None] & valid[None, :], other=0.0)  # [BLOCK_K, BLOCK_M]
        acc = _dot_acc(acc, xt, gm.to(x_ptr.dtype.element_ty), COMPUTE_FP64, DOT_FP32)
    rows = tap * C_in + ci
    gw_offs = split * (KSIZE * KSIZE * C_in * C_out) + rows[:, None] * C_out + co[None, :]
    tl.store(gw_ptr + gw_offs, acc, mask=ci_mask[:, None] & co_mask[None, :])
    first = (co * 0 + tap + tl.program_id(2)) == 0  # [BLOCK_N]: the tap-0, block-0 program
    tl.store(gb_ptr + split * C_out + co, gb, mask=co_mask & first)


# ----------------------------------------------------------------------------------------------------
# Launch helpers (no autograd).


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """[C_out, C_in, K, K] -> [K*K*C_in, C_out] (row (kh*K + kw)*C_in + ci): the B operand."""
    c_out, c_in, kh, kw = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(kh * kw * c_in, c_out).contiguous()


def _output_format(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _prologue_args(x: torch.Tensor, mask: torch.Tensor | None, bits: torch.Tensor | None):
    """(x, the prologue's pointer argument, PROLOGUE, WORDS) for a masked (or plain) conv input."""
    if mask is not None and bits is not None:
        raise ValueError("conv kernels: pass mask or bits, not both")
    if bits is not None:
        n, c, h, w = x.shape
        if bits.dtype != torch.int32 or tuple(bits.shape) != (n * h * w, sign_words(c)):
            raise ValueError(
                f"conv kernels: bits must be int32 [{n * h * w}, {sign_words(c)}], got {bits.shape}"
            )
        return x, bits.contiguous(), PROLOGUES["bits"], bits.shape[1]
    if mask is None:
        return x, x, PROLOGUES["none"], 1
    # the prologue reads x and mask at the same offsets: x takes mask's layout
    if not (mask.is_contiguous() or mask.is_contiguous(memory_format=torch.channels_last)):
        mask = mask.contiguous()
    if x.stride() != mask.stride():
        x = x.contiguous(memory_format=_output_format(mask))
    return x, mask, PROLOGUES["mask"], 1


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _bias_arg(bias: torch.Tensor | None, c_out: int, x: torch.Tensor) -> torch.Tensor:
    compute = _compute_dtype(x)
    return (
        torch.zeros(c_out, dtype=compute, device=x.device) if bias is None else bias.to(compute).contiguous()
    )


def _launch_meta(x: torch.Tensor, tile: ConvTile) -> dict:
    """The launch keywords every conv kernel shares: compute dtype flags, the tile, warps, stages."""
    return {
        "COMPUTE_FP64": x.dtype == torch.float64,
        "DOT_FP32": x.dtype == torch.float32,
        "BLOCK_M": tile.block_m,
        "BLOCK_N": tile.block_n,
        "BLOCK_K": tile.block_k,
        "num_warps": tile.num_warps,
        "num_stages": CONV_STAGES,
    }


def _unused_int32(device: torch.device) -> torch.Tensor:
    """An int32 stand-in for an unused int32 pointer argument (the launch matches the checked table)."""
    return torch.empty(1, dtype=torch.int32, device=device)


def _check_int32(name: str, *tensors: torch.Tensor) -> None:
    if max(t.numel() for t in tensors) >= 2**31:
        raise ValueError(f"{name} kernel: a tensor of 2**31 or more elements (int32 offsets)")


def conv2d_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    negative_slope: float,
    epilogue: str,
    eps: float,
    stride: int,
    padding: int,
    mask: torch.Tensor | None = None,
    bits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(out [N, C_out, OH, OW] in x's layout (channels_last if x is) and dtype, side output).

    The side output: rstd [N, OH, OW] for "lrelu_pixel_norm", the sign bits [N*OH*OW, WORDS] int32 of
    the pre-activation for "lrelu", None for "none". ``weight`` [C_out, C_in, K, K] in any float dtype
    (cast to x's). The prologue multiplies x by lrelu': ``mask`` (x's shape) > 0, or ``bits`` (x's sign
    bits, as "lrelu" writes them).
    """
    n, c_in, h, w = x.shape
    c_out, _, k, _ = weight.shape
    if (k, stride, padding) not in KERNEL_SHAPES:
        raise ValueError(f"conv2d_act kernel: no config for kernel {k}, stride {stride}, padding {padding}")
    # x is addressed through its strides (any view); the output is channels_last iff x is.
    x, mask_arg, prologue, words_in = _prologue_args(x, mask, bits)
    oh = (h + 2 * padding - k) // stride + 1
    ow = (w + 2 * padding - k) // stride + 1
    compute = _compute_dtype(x)
    out = torch.empty((n, c_out, oh, ow), dtype=x.dtype, device=x.device, memory_format=_output_format(x))
    code = EPILOGUES[epilogue]
    m_total = n * oh * ow
    side = None
    if code == 2:
        side = torch.empty((n, oh, ow), dtype=compute, device=x.device)
    elif code == 1:
        side = torch.empty((m_total, sign_words(c_out)), dtype=torch.int32, device=x.device)
    _check_int32("conv2d_act", x, out)
    if out.numel() == 0:
        return out, side
    tile = conv_tile(c_in, c_out, tile_n=code == 0)
    if code != 0 and c_out > tile.block_n:
        raise AssertionError("unreachable: conv_tile covers C_out")
    w_packed = pack_weight(weight.to(x.dtype))
    b = _bias_arg(bias, c_out, x)
    grid = (triton.cdiv(m_total, tile.block_m), triton.cdiv(c_out, tile.block_n))
    conv2d_act_kernel[grid](
        x,
        mask_arg,
        w_packed,
        b,
        out,
        side if code == 2 else b,
        side if code == 1 else _unused_int32(x.device),
        h,
        w,
        c_in,
        oh,
        ow,
        c_out,
        m_total,
        sign_words(c_out) if code == 1 else words_in,
        *x.stride(),
        *out.stride(),
        float(negative_slope),
        float(eps),
        KSIZE=k,
        STRIDE=stride,
        PAD=padding,
        PROLOGUE=prologue,
        EPILOGUE=code,
        **_launch_meta(x, tile),
    )
    return out, side


def wgrad_tile(c_in: int, c_out: int) -> ConvTile:
    """The weight-gradient tile: BLOCK_N covers C_out (<= 128), BLOCK_K = 16 or 32 input channels per
    program, BLOCK_M = 64 pixels per step."""
    if c_out > MAX_FUSED_C_OUT:
        raise ValueError(f"conv2d_weight_grad kernel: C_out={c_out} > {MAX_FUSED_C_OUT} (BLOCK_N = C_out)")
    block_n = next(b for b in CONV_BLOCK_N if c_out <= b)
    block_k = WGRAD_BLOCK_CI[0] if c_in <= WGRAD_BLOCK_CI[0] else WGRAD_BLOCK_CI[1]
    # 32 x 128 on 16 warps: on 8 warps the fp32 (FMA) variant spilled 272 B on sm_80 (static check)
    warps = 16 if block_n * block_k >= 128 * 32 else conv_warps(block_n)
    return ConvTile(CONV_BLOCK_M, block_n, block_k, warps)


# Splits of the weight gradient's pixel sum: enough programs to fill a GPU (taps x C_in blocks
# programs per split, ~1,024 in all), but partials (written, then read by the sum) under 5% of x's bytes.
WGRAD_TARGET_PROGRAMS = 1024
WGRAD_PARTIAL_FRACTION = 0.05


def weight_grad_splits(
    tiles: int, programs_per_split: int, partial_elems: int, x_bytes: int, target_programs: int
) -> int:
    """How many pixel splits a weight-gradient kernel sums separately: a function of shapes only, so
    the sum order (and so the result) is the same on every run. ``partial_elems``: one split's
    partial weight-gradient elements (fp32)."""
    by_programs = -(-target_programs // programs_per_split)
    by_bytes = max(1, int(WGRAD_PARTIAL_FRACTION * x_bytes // (2 * 4 * partial_elems)))
    splits = max(1, min(tiles, by_programs, by_bytes))
    return -(-tiles // -(-tiles // splits))  # no empty split


def _reduce_partials(gw_part: torch.Tensor, gb_part: torch.Tensor, ksize: int, c_in: int, c_out: int):
    """[splits, K*K*C_in, C_out] -> sum over splits (one reduction, a fixed order) -> [C_out, C_in, K, K]."""
    gw = gw_part.sum(0).view(ksize, ksize, c_in, c_out).permute(3, 2, 0, 1).contiguous()
    return gw, gb_part.sum(0)


def conv2d_weight_grad(
    g: torch.Tensor,
    bits: torch.Tensor,
    x: torch.Tensor,
    negative_slope: float,
    ksize: int,
    stride: int,
    padding: int,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(grad weight [C_out, C_in, K, K], grad bias [C_out], splits) of lrelu(conv(x, w) + b), given the
    output gradient g [N, C_out, OH, OW] and the forward's sign bits. fp32 (fp64 for fp64 x)."""
    n, c_in, h, w = x.shape
    _, c_out, oh, ow = g.shape
    if (ksize, stride, padding) not in KERNEL_SHAPES:
        raise ValueError(f"conv2d_weight_grad kernel: no config for kernel {ksize}, stride {stride}")
    if g.dtype != x.dtype:
        raise ValueError(f"conv2d_weight_grad kernel: g is {g.dtype}, x is {x.dtype}")
    g, bits, _, words = _prologue_args(g, None, bits)
    compute = _compute_dtype(x)
    taps = ksize * ksize
    tile = wgrad_tile(c_in, c_out)
    m_total = n * oh * ow
    tiles = triton.cdiv(m_total, tile.block_m)
    ci_blocks = triton.cdiv(c_in, tile.block_k)
    _check_int32("conv2d_weight_grad", x, g)
    x_bytes = x.numel() * x.element_size()
    splits = weight_grad_splits(tiles, taps * ci_blocks, taps * c_in * c_out, x_bytes, WGRAD_TARGET_PROGRAMS)
    gw_part = torch.zeros((splits, taps * c_in, c_out), dtype=compute, device=x.device)
    gb_part = torch.zeros((splits, c_out), dtype=compute, device=x.device)
    if m_total and c_in:
        conv2d_weight_grad_kernel[(splits, taps, ci_blocks)](
            g,
            bits,
            x,
            gw_part,
            gb_part,
            h,
            w,
            c_in,
            oh,
            ow,
            c_out,
            m_total,
            words,
            triton.cdiv(tiles, splits),
            *g.stride(),
            *x.stride(),
            float(negative_slope),
            KSIZE=ksize,
            STRIDE=stride,
            PAD=padding,
            **_launch_meta(x, tile),
        )
    return (*_reduce_partials(gw_part, gb_part, ksize, c_in, c_out), splits)


_PARITY_TAPS = ((3, 1), (2, 0))  # [parity][tap] -> row of the 4x4 transposed-conv kernel


def pack_parity_weight(weight4t: torch.Tensor) -> torch.Tensor:
    """conv_transpose2d weight [C_in, C_out, 4, 4] -> [16*C_in, C_out]: the four parities' 2x2 taps,
    row ((py*2 + px)*4 + ty*2 + tx)*C_in + ci = weight4t[ci, :, 3 - py - 2ty, 3 - px - 2tx]."""
    c_in, c_out = weight4t.shape[:2]
    k = torch.tensor(_PARITY_TAPS, device=weight4t.device)  # [2, 2]
    w = weight4t[:, :, k][:, :, :, :, k]  # [C_in, C_out, py, ty, px, tx]
    return w.permute(2, 4, 3, 5, 0, 1).reshape(16 * c_in, c_out).contiguous()


def upscale_conv2d_act(
    x: torch.Tensor,
    weight4t: torch.Tensor,
    bias: torch.Tensor | None,
    negative_slope: float,
    epilogue: str,
    eps: float,
    mask: torch.Tensor | None = None,
    bits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """conv_transpose2d(x', weight4t, stride 2, pad 1) + epilogue: (out [N, C_out, 2H, 2W] in x's layout
    and dtype, rstd [N, 2H, 2W] (empty unless "lrelu_pixel_norm")).

    ``weight4t``: [C_in, C_out, 4, 4] (the transposed-conv kernel of ``resample_weight.upscale_conv_weight``
    for G's conv0_up; for the input gradient of a stride-2 4x4 conv, that conv's weight). x' = x, or
    x * lrelu' from ``mask`` or ``bits`` (as :func:`conv2d_act`).
    """
    n, c_in, h, w = x.shape
    c_out = weight4t.shape[1]
    x, mask_arg, prologue, words = _prologue_args(x, mask, bits)
    code = EPILOGUES[epilogue]
    if code == 1 and prologue:
        raise ValueError("upscale_conv2d_act kernel: a prologue only with the plain conv (epilogue 'none')")
    out = torch.empty(
        (n, c_out, 2 * h, 2 * w), dtype=x.dtype, device=x.device, memory_format=_output_format(x)
    )
    rstd = torch.empty((n, 2 * h, 2 * w) if code == 2 else (0,), dtype=_compute_dtype(x), device=x.device)
    _check_int32("upscale_conv2d_act", x, out)
    if out.numel() == 0:
        return out, rstd
    tile = upscale_tile(c_in, c_out, x.dtype, tile_n=code == 0)
    b = _bias_arg(bias, c_out, x)
    m_total = n * h * w
    grid = (triton.cdiv(m_total, tile.block_m), triton.cdiv(c_out, tile.block_n), 4)
    upscale_conv2d_act_kernel[grid](
        x,
        mask_arg,
        pack_parity_weight(weight4t.to(x.dtype)),
        b,
        out,
        rstd if code == 2 else b,
        h,
        w,
        c_in,
        c_out,
        m_total,
        words,
        *x.stride(),
        *out.stride(),
        float(negative_slope),
        float(eps),
        PROLOGUE=prologue,
        EPILOGUE=code,
        **_launch_meta(x, tile),
    )
    return out, rstd


# ----------------------------------------------------------------------------------------------------
# Every launchable variant, for the static check.

_PTR = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def _config(kernel, signature: dict, constexprs: dict, tile: ConvTile) -> dict:
    return {
        "kernel": kernel,
        "signature": signature,
        "constexprs": dict(constexprs, BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k),
        "num_warps": tile.num_warps,
        "num_stages": CONV_STAGES,
    }


def _with_mask_ptr(signature: dict, act: str, prologue: int) -> dict:
    """The signature with mask_ptr typed for the prologue: the activation dtype (mask tensor, or unused)
    or int32 (sign bits)."""
    return dict(signature, mask_ptr="*i32" if prologue == PROLOGUES["bits"] else act)


def launch_configs() -> list[dict]:
    """Every (kernel, signature, constexprs, num_warps) the launchers can launch on a GPU.

    conv2d_act_kernel, 3x3: the forward (lrelu + sign bits: D; lrelu + pixel norm: G), the input
    gradient with the lrelu' prologue from the mask tensor (the penalty's differentiable pass) and from
    the sign bits (first order), and the plain conv; 4x4 stride 2: conv2d_downscale_bias_act's forward
    and the plain conv (the upscale op's input gradient, and the double backward). The parity kernel:
    G's conv0_up forward (lrelu, lrelu + pixel norm) and the downscale input gradient (plain, mask and
    bits prologues). The weight-gradient kernel: both kernel shapes, every tile.
    """
    configs = []
    for dtype in GPU_DTYPES:
        act = _PTR[dtype]
        dot = {"COMPUTE_FP64": False, "DOT_FP32": dtype == torch.float32}
        signature = {
            "x_ptr": act,
            "mask_ptr": act,
            "w_ptr": act,
            "bias_ptr": "*fp32",
            "out_ptr": act,
            "rstd_ptr": "*fp32",
            "bits_ptr": "*i32",
            **{name: "i32" for name in ("H", "W", "C_in", "OH", "OW", "C_out", "M", "WORDS")},
            **{name: "i32" for name in ("sxn", "sxc", "sxh", "sxw", "son", "soc", "soh", "sow")},
            "negative_slope": "fp32",
            "eps": "fp32",
        }
        for ksize, stride, pad in KERNEL_SHAPES:
            if ksize == 3:  # forward (D, G), input gradient (mask: the penalty; bits: first order), plain
                variants = [(0, 1), (0, 2), (1, 0), (2, 0), (0, 0)]
            else:  # 4x4 stride 2: conv2d_downscale_bias_act's forward, the plain conv
                variants = [(0, 1), (0, 0)]
            for prologue, epilogue in variants:
                for block_n in CONV_BLOCK_N:
                    tile = conv_tile(16, block_n)
                    constexprs = {"KSIZE": ksize, "STRIDE": stride, "PAD": pad, "PROLOGUE": prologue}
                    constexprs.update(EPILOGUE=epilogue, **dot)
                    sig = _with_mask_ptr(signature, act, prologue)
                    configs.append(_config(conv2d_act_kernel, sig, constexprs, tile))
        up_signature = {
            "x_ptr": act,
            "mask_ptr": act,
            "w_ptr": act,
            "bias_ptr": "*fp32",
            "out_ptr": act,
            "rstd_ptr": "*fp32",
            **{name: "i32" for name in ("H", "W", "C_in", "C_out", "M", "WORDS")},
            **{name: "i32" for name in ("sxn", "sxc", "sxh", "sxw", "son", "soc", "soh", "sow")},
            "negative_slope": "fp32",
            "eps": "fp32",
        }
        up_tiles = sorted({upscale_tile(16, c_out, dtype) for c_out in CONV_BLOCK_N}, key=lambda t: t.block_n)
        for prologue, epilogue in ((0, 1), (0, 2), (0, 0), (1, 0), (2, 0)):
            for tile in up_tiles:
                constexprs = {"PROLOGUE": prologue, "EPILOGUE": epilogue, **dot}
                sig = _with_mask_ptr(up_signature, act, prologue)
                configs.append(_config(upscale_conv2d_act_kernel, sig, constexprs, tile))
        wgrad_signature = {
            "g_ptr": act,
            "bits_ptr": "*i32",
            "x_ptr": act,
            "gw_ptr": "*fp32",
            "gb_ptr": "*fp32",
            **{name: "i32" for name in ("H", "W", "C_in", "OH", "OW", "C_out", "M", "WORDS")},
            "TILES_PER_SPLIT": "i32",
            **{name: "i32" for name in ("sgn", "sgc", "sgh", "sgw", "sxn", "sxc", "sxh", "sxw")},
            "negative_slope": "fp32",
        }
        for ksize, stride, pad in KERNEL_SHAPES:
            for block_n in CONV_BLOCK_N:
                for c_in in WGRAD_BLOCK_CI:
                    tile = wgrad_tile(c_in, block_n)
                    constexprs = {"KSIZE": ksize, "STRIDE": stride, "PAD": pad, **dot}
                    configs.append(_config(conv2d_weight_grad_kernel, wgrad_signature, constexprs, tile))
    return configs
