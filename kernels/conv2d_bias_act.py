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
Prologue (PROLOGUE_MASK): the A operand is multiplied by lrelu'(mask) as it is loaded
(``mask > 0 ? 1 : slope``), so the input gradient of conv + lrelu reads the incoming gradient and
the saved output once and never writes the masked gradient.
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


def conv_tile(c_in: int, c_out: int) -> ConvTile:
    """The tile for ``c_in -> c_out`` channels (c_out <= MAX_FUSED_C_OUT)."""
    if c_out > MAX_FUSED_C_OUT:
        raise ValueError(f"conv2d_bias_act kernel: C_out={c_out} > {MAX_FUSED_C_OUT} (BLOCK_N = C_out)")
    block_n = next(b for b in CONV_BLOCK_N if c_out <= b)
    return ConvTile(CONV_BLOCK_M, block_n, CONV_BLOCK_K, conv_warps(block_n))


def upscale_tile(c_in: int, c_out: int, dtype: torch.dtype) -> ConvTile:
    """The parity kernel's tile: conv_tile's, except in fp32 (the FMA dot, not tensor cores), where the
    static check measured spills for 16 channels on 4 warps (8-16 B, sm_90) and on 8 warps (24 B,
    sm_80), and for the 128-channel pixel-norm tile on 8 warps (40 B, sm_80): fp32 takes the 32-channel
    tile for up to 32 channels and 16 warps for 128 (82-128 registers, no spills)."""
    tile = conv_tile(c_in, c_out)
    if dtype != torch.float32 and dtype != torch.float64:
        return tile
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
def conv2d_act_kernel(
    x_ptr,
    mask_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    rstd_ptr,
    H,
    W,
    C_in,
    OH,
    OW,
    C_out,
    M,
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
    PROLOGUE_MASK: tl.constexpr,
    EPILOGUE: tl.constexpr,
    COMPUTE_FP64: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[m, co] = epilogue(sum_{kh, kw, ci} x'[n, ci, oh*S-P+kh, ow*S-P+kw] * w[(kh*K+kw)*C_in+ci, co]).

    x' = x, or x * lrelu'(mask) with PROLOGUE_MASK (mask has x's strides). Grid (cdiv(M, BLOCK_M),
    cdiv(C_out, BLOCK_N)). rstd [M] is written with EPILOGUE == 2 only.
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
    kr = tl.arange(0, BLOCK_K)
    # A rolled loop over the taps: unrolling them (tl.static_range) made ptxas keep every tap's
    # addresses live: 200-255 registers and up to 4 KB of spills (static check), compiles of 15-130 s.
    for tap in range(0, KSIZE * KSIZE):
        kh = tap // KSIZE
        kw = tap % KSIZE
        ih = oh * STRIDE - PAD + kh
        iw = ow * STRIDE - PAD + kw
        valid = m_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        row_base = n * sxn + ih * sxh + iw * sxw  # [BLOCK_M] (garbage where not valid: masked)
        w_row0 = tap * C_in
        for c0 in range(0, C_in, BLOCK_K):
            ci = c0 + kr
            ci_mask = ci < C_in
            a_mask = valid[:, None] & ci_mask[None, :]
            a_offs = row_base[:, None] + ci[None, :] * sxc
            a = tl.load(x_ptr + a_offs, mask=a_mask, other=0.0)
            if PROLOGUE_MASK:
                # compare in the compute dtype (the interpreter orders bf16 by bit pattern)
                mv = tl.load(mask_ptr + a_offs, mask=a_mask, other=0.0).to(acc_dtype)
                af = a.to(acc_dtype)
                a = tl.where(mv > 0, af, af * slope).to(x_ptr.dtype.element_ty)
            b = tl.load(
                w_ptr + (w_row0 + ci)[:, None] * C_out + co[None, :],
                mask=ci_mask[:, None] & co_mask[None, :],
                other=0.0,
            )
            if COMPUTE_FP64:
                acc += tl.dot(a.to(tl.float64), b.to(tl.float64))
            elif DOT_FP32 or INTERPRETER_FP32_DOT:
                acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
            else:
                acc += tl.dot(a, b)  # fp16 / bf16 on tensor cores, fp32 accumulation
    # The epilogue inline (not _epilogue_store): with the helper, ptxas spilled 8-32 B in the sm_80
    # pixel-norm variants (static check), inline none.
    y = acc
    if EPILOGUE >= 1:
        bias = tl.load(bias_ptr + co, mask=co_mask, other=0.0).to(acc_dtype)
        v = acc + bias[None, :]
        y = tl.where(v > 0, v, v * slope)  # masked channels: 0
        if EPILOGUE == 2:
            r = 1.0 / tl.sqrt(tl.sum(y * y, axis=1) / C_out + eps)  # [BLOCK_M]
            y = y * r[:, None]
            tl.store(rstd_ptr + m, r, mask=m_mask)
    out_offs = (n * son + oh * soh + ow * sow)[:, None] + co[None, :] * soc
    tl.store(out_ptr + out_offs, y.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & co_mask[None, :])


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
    w_ptr,
    bias_ptr,
    out_ptr,
    rstd_ptr,
    H,
    W,
    C_in,
    C_out,
    M,
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
    EPILOGUE: tl.constexpr,
    COMPUTE_FP64: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Nearest 2x upsample + 3x3 conv + epilogue, as four 2x2 parity convs of the low-res input.

    Output pixel (2a + py, 2b + px) = sum over the 2x2 taps (ty, tx) of x[a - 1 + py + ty, b - 1 + px + tx]
    times the parity's folded weights w[((py*2 + px)*4 + ty*2 + tx) * C_in + ci, co] (the 4x4
    transposed-conv kernel of resample_weight, taken at ky = 3 - py - 2ty, kx = 3 - px - 2tx): no
    upsampled tensor, no zero taps. Grid (cdiv(M, BLOCK_M), cdiv(C_out, BLOCK_N), 4 parities); M = N*H*W
    low-res pixels; the four parity programs of one tile read the same input rows (L2 hits). rstd is
    [N, 2H, 2W].
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
    kr = tl.arange(0, BLOCK_K)
    for tap in range(0, 4):
        ih = a - 1 + py + tap // 2
        iw = b - 1 + px + tap % 2
        valid = m_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        row_base = n * sxn + ih * sxh + iw * sxw
        w_row0 = (parity * 4 + tap) * C_in
        for c0 in range(0, C_in, BLOCK_K):
            ci = c0 + kr
            ci_mask = ci < C_in
            a_tile = tl.load(
                x_ptr + row_base[:, None] + ci[None, :] * sxc,
                mask=valid[:, None] & ci_mask[None, :],
                other=0.0,
            )
            b_tile = tl.load(
                w_ptr + (w_row0 + ci)[:, None] * C_out + co[None, :],
                mask=ci_mask[:, None] & co_mask[None, :],
                other=0.0,
            )
            if COMPUTE_FP64:
                acc += tl.dot(a_tile.to(tl.float64), b_tile.to(tl.float64))
            elif DOT_FP32 or INTERPRETER_FP32_DOT:
                acc += tl.dot(a_tile.to(tl.float32), b_tile.to(tl.float32), input_precision="ieee")
            else:
                acc += tl.dot(a_tile, b_tile)
    oh = 2 * a + py
    ow = 2 * b + px
    out_offs = (n * son + oh * soh + ow * sow)[:, None] + co[None, :] * soc
    r_offs = (n * (2 * H) + oh) * (2 * W) + ow
    _epilogue_store(
        acc, bias_ptr, out_ptr, out_offs, rstd_ptr, r_offs, m_mask, co, co_mask, C_out, slope, eps, EPILOGUE
    )


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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(out [N, C_out, OH, OW] in x's layout (channels_last if x is) and dtype, rstd [N, OH, OW] or None).

    ``weight`` [C_out, C_in, K, K] in any float dtype (cast to x's). ``mask`` (x's shape): multiply x
    by lrelu'(mask) in the prologue.
    """
    n, c_in, h, w = x.shape
    c_out, _, k, _ = weight.shape
    if (k, stride, padding) not in KERNEL_SHAPES:
        raise ValueError(f"conv2d_act kernel: no config for kernel {k}, stride {stride}, padding {padding}")
    # x is addressed through its strides (any view); the output is channels_last iff x is.
    if mask is not None:  # the prologue reads x and mask at the same offsets: x takes mask's layout
        if not (mask.is_contiguous() or mask.is_contiguous(memory_format=torch.channels_last)):
            mask = mask.contiguous()
        if x.stride() != mask.stride():
            x = x.contiguous(memory_format=_output_format(mask))
    oh = (h + 2 * padding - k) // stride + 1
    ow = (w + 2 * padding - k) // stride + 1
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.empty((n, c_out, oh, ow), dtype=x.dtype, device=x.device, memory_format=_output_format(x))
    code = EPILOGUES[epilogue]
    rstd = torch.empty((n, oh, ow), dtype=compute, device=x.device) if code == 2 else None
    m_total = n * oh * ow
    if max(x.numel(), out.numel()) >= 2**31:
        raise ValueError("conv2d_act kernel: a tensor of 2**31 or more elements (int32 pixel indices)")
    if out.numel() == 0:
        return out, rstd
    tile = conv_tile(c_in, c_out)
    if code == 2 and c_out > tile.block_n:
        raise AssertionError("unreachable: conv_tile covers C_out")
    w_packed = pack_weight(weight.to(x.dtype))
    b = torch.zeros(c_out, dtype=compute, device=x.device) if bias is None else bias.to(compute).contiguous()
    grid = (triton.cdiv(m_total, tile.block_m), triton.cdiv(c_out, tile.block_n))
    conv2d_act_kernel[grid](
        x,
        x if mask is None else mask,
        w_packed,
        b,
        out,
        b if rstd is None else rstd,
        h,
        w,
        c_in,
        oh,
        ow,
        c_out,
        m_total,
        *x.stride(),
        *out.stride(),
        float(negative_slope),
        float(eps),
        KSIZE=k,
        STRIDE=stride,
        PAD=padding,
        PROLOGUE_MASK=mask is not None,
        EPILOGUE=code,
        COMPUTE_FP64=x.dtype == torch.float64,
        DOT_FP32=x.dtype == torch.float32,
        BLOCK_M=tile.block_m,
        BLOCK_N=tile.block_n,
        BLOCK_K=tile.block_k,
        num_warps=tile.num_warps,
        num_stages=CONV_STAGES,
    )
    return out, rstd


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
    pixel_norm: bool,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [N, C_out, 2H, 2W] in x's layout and dtype, rstd [N, 2H, 2W] (empty without pixel norm)).

    ``weight4t``: the [C_in, C_out, 4, 4] transposed-conv kernel of ``resample_weight.upscale_conv_weight``.
    """
    n, c_in, h, w = x.shape
    c_out = weight4t.shape[1]
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.empty(
        (n, c_out, 2 * h, 2 * w), dtype=x.dtype, device=x.device, memory_format=_output_format(x)
    )
    rstd = torch.empty((n, 2 * h, 2 * w) if pixel_norm else (0,), dtype=compute, device=x.device)
    if max(x.numel(), out.numel()) >= 2**31:
        raise ValueError("upscale_conv2d_act kernel: a tensor of 2**31 or more elements (int32 offsets)")
    if out.numel() == 0:
        return out, rstd
    tile = upscale_tile(c_in, c_out, x.dtype)
    b = torch.zeros(c_out, dtype=compute, device=x.device) if bias is None else bias.to(compute).contiguous()
    m_total = n * h * w
    grid = (triton.cdiv(m_total, tile.block_m), triton.cdiv(c_out, tile.block_n), 4)
    upscale_conv2d_act_kernel[grid](
        x,
        pack_parity_weight(weight4t.to(x.dtype)),
        b,
        out,
        rstd if pixel_norm else b,
        h,
        w,
        c_in,
        c_out,
        m_total,
        *x.stride(),
        *out.stride(),
        float(negative_slope),
        float(eps),
        EPILOGUE=2 if pixel_norm else 1,
        COMPUTE_FP64=x.dtype == torch.float64,
        DOT_FP32=x.dtype == torch.float32,
        BLOCK_M=tile.block_m,
        BLOCK_N=tile.block_n,
        BLOCK_K=tile.block_k,
        num_warps=tile.num_warps,
        num_stages=CONV_STAGES,
    )
    return out, rstd


# ----------------------------------------------------------------------------------------------------
# Every launchable variant, for the static check.

_PTR = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def launch_configs() -> list[dict]:
    """Every (kernel, signature, constexprs, num_warps) ``conv2d_act`` can launch on a GPU.

    Epilogue variants: the forward (lrelu; lrelu + pixel norm for the 3x3 conv, the generator's), the
    plain conv of the backward with and without the lrelu'-mask prologue.
    """
    configs = []
    for dtype in GPU_DTYPES:
        act = _PTR[dtype]
        signature = {
            "x_ptr": act,
            "mask_ptr": act,
            "w_ptr": act,
            "bias_ptr": "*fp32",
            "out_ptr": act,
            "rstd_ptr": "*fp32",
            **{name: "i32" for name in ("H", "W", "C_in", "OH", "OW", "C_out", "M")},
            **{name: "i32" for name in ("sxn", "sxc", "sxh", "sxw", "son", "soc", "soh", "sow")},
            "negative_slope": "fp32",
            "eps": "fp32",
        }
        for ksize, stride, pad in KERNEL_SHAPES:
            if ksize == 3:  # forward (D, G), input gradient (masked: D's penalty), plain conv
                variants = [(False, 1), (False, 2), (True, 0), (False, 0)]
            else:  # 4x4 stride 2: conv2d_downscale_bias_act's forward, upscale's input gradient
                variants = [(False, 1), (False, 0)]
            for prologue, epilogue in variants:
                for block_n in CONV_BLOCK_N:
                    for block_k in (CONV_BLOCK_K,):
                        configs.append(
                            {
                                "kernel": conv2d_act_kernel,
                                "signature": signature,
                                "constexprs": {
                                    "KSIZE": ksize,
                                    "STRIDE": stride,
                                    "PAD": pad,
                                    "PROLOGUE_MASK": prologue,
                                    "EPILOGUE": epilogue,
                                    "COMPUTE_FP64": False,
                                    "DOT_FP32": dtype == torch.float32,
                                    "BLOCK_M": CONV_BLOCK_M,
                                    "BLOCK_N": block_n,
                                    "BLOCK_K": block_k,
                                },
                                "num_warps": conv_warps(block_n),
                                "num_stages": CONV_STAGES,
                            }
                        )
        up_signature = {
            "x_ptr": act,
            "w_ptr": act,
            "bias_ptr": "*fp32",
            "out_ptr": act,
            "rstd_ptr": "*fp32",
            **{name: "i32" for name in ("H", "W", "C_in", "C_out", "M")},
            **{name: "i32" for name in ("sxn", "sxc", "sxh", "sxw", "son", "soc", "soh", "sow")},
            "negative_slope": "fp32",
            "eps": "fp32",
        }
        up_tiles = {upscale_tile(16, c_out, dtype) for c_out in CONV_BLOCK_N}
        for epilogue in (1, 2):
            for tile in sorted(up_tiles, key=lambda t: t.block_n):
                configs.append(
                    {
                        "kernel": upscale_conv2d_act_kernel,
                        "signature": up_signature,
                        "constexprs": {
                            "EPILOGUE": epilogue,
                            "COMPUTE_FP64": False,
                            "DOT_FP32": dtype == torch.float32,
                            "BLOCK_M": tile.block_m,
                            "BLOCK_N": tile.block_n,
                            "BLOCK_K": tile.block_k,
                        },
                        "num_warps": tile.num_warps,
                        "num_stages": CONV_STAGES,
                    }
                )
    return configs
