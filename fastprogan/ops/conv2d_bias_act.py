"""conv2d_bias_act / conv2d_downscale_bias_act: a convolution and its epilogue as one Triton kernel.

Math:
- ``conv2d_bias_act``: ``bias_act(conv2d(x, w, padding=1), b, slope, pixel_norm)`` for a 3x3 w
  [C_out, C_in, 3, 3], x [N, C_in, H, W] -> [N, C_out, H, W] (any H, W).
- ``conv2d_downscale_bias_act``: ``bias_act(conv2d_downscale(x, w), b, slope)`` (D's conv1_down: 3x3
  conv, 2x2 average pool), computed as one stride-2 4x4 conv with the weights of
  :func:`fastprogan.ops.resample_weight.downscale_conv_weight`; H, W even.

The fused path (``fastprogan.kernels.conv2d_bias_act``): an implicit GEMM (M = N*OH*OW pixels, N =
C_out, K = taps x C_in) with ``tl.dot`` and an fp32 accumulator, TF32 off for fp32, the bias, lrelu
and (3x3 only) pixel norm applied to the accumulator in registers: the conv output is written once,
never read back by an epilogue pass. BLOCK_N = C_out, so C_out <= 128 (``MAX_FUSED_C_OUT``); larger
layers keep cuDNN (they are compute-bound there and the pixel norm would need a second pass).

Derivatives (every backward is built from registered ops or differentiable aten ops):
- D path (no pixel norm): every order. Forward ``fastprogan::conv2d_act``, which returns the output and
  the pre-activation's sign bits ([N*OH*OW, cdiv(C_out, 32)] int32) and saves x, w, the output and the
  bits. Its backward:
  * only the input gradient needed (the penalty's ``autograd.grad(score, x_hat)``): one kernel that
    applies lrelu'(out) to g as it loads it (no masked gradient is written):
    ``fastprogan::conv2d_masked(g, out, flip(w)^T)`` (3x3) or
    ``fastprogan::conv_transpose2x_masked(g, out, w4)`` (stride-2 4x4: the parity kernel);
  * weight and/or bias gradient needed (first order): ``fastprogan::conv_input_grad_bits`` (the same
    kernels with lrelu' from the sign bits) and ``fastprogan::conv_weight_grad_bits`` (the Triton
    weight-gradient kernel: lrelu' prologue, split-K fp32 partials summed in a fixed order, bias
    gradient folded in): g is never masked into memory and cuDNN is not called.
  ``conv2d_masked(x, mask, w)`` = conv(x * lrelu'(mask), w) is linear in x and w; its backward is
  ``lrelu_grad(conv2d_masked(gy, None, flip(w)^T), mask)`` and a weight gradient, 0 w.r.t. mask (the
  transposed op likewise). The sign-bit ops are linear in g; their backward uses each other,
  ``F.conv2d`` and :func:`_apply_bits`.
- G path (pixel norm): first order. ``fastprogan::conv2d_act_pixel_norm`` saves x, w, the output and
  the per-pixel rsqrt r; the backward recomputes the pixel-norm gradient from them,
  ``g_a = r (g - out mean_c(g out))`` (a = out / r), masks it with lrelu'(out), and continues as the D
  path with the masked gradient materialised (the input-gradient kernel, cuDNN's weight gradient).
  Differentiating that backward again raises RuntimeError, as bias_act's pixel-norm path does.

impl: "ref" = the composition of ``_ref`` ops; "triton" = the fused kernels (on CPU only under
TRITON_INTERPRET=1); "cudnn" = today's path (cuDNN conv, then the Triton epilogue ``bias_act``);
"auto" = :func:`conv_path`: never the kernels on CPU; on CUDA the device's dispatch table
(``fastprogan.ops.dispatch_table``, op names = these function names, choices "triton" / "cudnn"),
else the roofline model of :func:`predicted_speedup` (>= 1.2x).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fastprogan.ops import dispatch_table
from fastprogan.ops._common import dense_format, empty_like_dense, kernel_dtype_ok
from fastprogan.ops._common import resolve_impl as _resolve_triton
from fastprogan.ops._conv_args import check_conv3x3_args
from fastprogan.ops._kernels import load_kernels
from fastprogan.ops.bias_act import bias_act, bias_act_ref, check_bias_act_args
from fastprogan.ops.conv2d_downscale import conv2d_downscale_ref
from fastprogan.ops.pixel_norm import DEFAULT_EPS
from fastprogan.ops.resample_weight import downscale_conv_weight, upscale_conv_weight
from fastprogan.ops.upscale_conv2d import (  # the roofline constants
    GPU_BANDWIDTH,
    GPU_PEAK_FLOPS,
    upscale_conv2d,
    upscale_conv2d_ref,
)

CONV_IMPLS = ("auto", "ref", "triton", "cudnn")
MAX_FUSED_C_OUT = 128  # = kernels.conv2d_bias_act.MAX_FUSED_C_OUT (BLOCK_N = C_out); kernels import Triton
SPEEDUP_THRESHOLD = 1.2  # impl="auto" without a table: the kernels only where the model predicts this

# ----------------------------------------------------------------------------------------------------
# References (compositions of the ops' _ref functions)


def conv2d_bias_act_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    pixel_norm: bool = False,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """The oracle: ``F.conv2d`` (pad 1), then :func:`bias_act_ref`."""
    return bias_act_ref(F.conv2d(x, weight.to(x.dtype), padding=1), bias, negative_slope, pixel_norm, eps)


def conv2d_downscale_bias_act_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2
) -> torch.Tensor:
    """The oracle: :func:`conv2d_downscale_ref` (3x3 conv, 2x2 average pool), then :func:`bias_act_ref`."""
    return bias_act_ref(conv2d_downscale_ref(x, weight.to(x.dtype)), bias, negative_slope)


def upscale_conv2d_bias_act_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    pixel_norm: bool = True,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """The oracle: :func:`upscale_conv2d_ref` (nearest 2x, 3x3 conv), then :func:`bias_act_ref`."""
    return bias_act_ref(upscale_conv2d_ref(x, weight.to(x.dtype)), bias, negative_slope, pixel_norm, eps)


# ----------------------------------------------------------------------------------------------------
# Helpers shared by the registered ops' real and fake implementations


def _out_hw(h: int, w: int, k: int, stride: int, padding: int) -> tuple[int, int]:
    return (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1


def _empty_out(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    oh, ow = _out_hw(x.shape[2], x.shape[3], weight.shape[2], stride, padding)
    shape = (x.shape[0], weight.shape[0], oh, ow)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=dense_format(x))


def _note_tensor_inputs(ctx, inputs) -> None:
    """Remember which op inputs are tensors: autograd's next_functions has one edge per tensor input."""
    ctx.tensor_inputs = tuple(isinstance(a, torch.Tensor) for a in inputs)


def _wanted(ctx, index: int) -> bool:
    """``ctx.needs_input_grad[index]`` narrowed to the running backward pass.

    needs_input_grad is fixed at forward time: in the penalty's ``autograd.grad(score, x_hat)`` the
    weights require grad but the engine will not use their gradients. Asking the engine whether it will
    run the input's gradient node skips that work (the weight gradients and the masked-gradient write:
    the input gradient then takes the lrelu'-prologue kernel). Falls back to needs_input_grad where
    the private API is missing.
    """
    if not ctx.needs_input_grad[index]:
        return False
    try:
        edge = sum(ctx.tensor_inputs[:index])
        node = ctx.next_functions[edge][0]
        return node is None or bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, IndexError, RuntimeError):
        return True


def _transposed_flip(weight: torch.Tensor) -> torch.Tensor:
    """The 3x3 conv whose output is the input gradient of ``conv(., weight, pad 1)``."""
    return weight.flip((2, 3)).transpose(0, 1)


def _weight_grad(gy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int):
    # cuDNN on a GPU; differentiable (aten's convolution_backward has a double-backward formula).
    return torch.ops.aten.convolution_backward(
        gy, x, weight, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1, [False, True, False]
    )[1]


def _input_grad(gy: torch.Tensor, mask, weight, slope: float, stride: int, padding: int):
    """conv^T(gy * lrelu'(mask), weight): the input gradient of ``conv(., weight, stride, padding)``,
    differentiable: the 3x3 conv kernel on the flipped weights, or the parity kernel (stride-2 4x4)."""
    if stride == 1:
        return torch.ops.fastprogan.conv2d_masked(gy, mask, _transposed_flip(weight), slope, 1, padding)
    return torch.ops.fastprogan.conv_transpose2x_masked(gy, mask, weight, slope)


def _unpack_bits(bits: torch.Tensor, shape) -> torch.Tensor:
    """The forward's sign bits [N*OH*OW, WORDS] int32 -> bool [N, C, OH, OW] (pre-activation > 0)."""
    n, c, oh, ow = shape
    ch = torch.arange(c, device=bits.device)
    on = (bits[:, ch // 32] >> (ch % 32)) & 1  # [M, C]
    return on.view(n, oh, ow, c).permute(0, 3, 1, 2).bool()


def _apply_bits(t: torch.Tensor, bits: torch.Tensor, slope: float) -> torch.Tensor:
    """t * lrelu' from sign bits, in plain (differentiable) torch ops: the double backward only."""
    return torch.where(_unpack_bits(bits, t.shape), t, t * slope)


# ----------------------------------------------------------------------------------------------------
# fastprogan::conv2d_masked: conv(x * lrelu'(mask), w), linear in x and w (every order)


@torch.library.custom_op(
    "fastprogan::conv2d_masked",
    mutates_args=(),
    schema="(Tensor x, Tensor? mask, Tensor weight, float negative_slope, int stride, int padding) -> Tensor",
)
def _conv2d_masked_op(
    x: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    negative_slope: float,
    stride: int,
    padding: int,
) -> torch.Tensor:
    kernels = load_kernels("conv2d_bias_act")
    return kernels.conv2d_act(x, weight, None, negative_slope, "none", 1.0, stride, padding, mask=mask)[0]


@_conv2d_masked_op.register_fake
def _(x, mask, weight, negative_slope, stride, padding):
    if mask is not None and dense_format(mask) != dense_format(x):
        x = x.contiguous(memory_format=dense_format(mask))  # the kernel brings x to mask's layout
    return _empty_out(x, weight, stride, padding)


def _conv2d_masked_setup(ctx, inputs, output):
    _note_tensor_inputs(ctx, inputs)
    x, mask, weight, negative_slope, stride, padding = inputs
    ctx.conf = (negative_slope, stride, padding)
    ctx.set_materialize_grads(False)  # no zeros tensor (and no kernels on it) for a missing gradient
    ctx.save_for_backward(x, mask, weight)


def _conv2d_masked_backward(ctx, gy):
    if gy is None:
        return None, None, None, None, None, None
    x, mask, weight = ctx.saved_tensors
    slope, stride, padding = ctx.conf
    gx = gw = None
    if _wanted(ctx, 0):
        gx = _input_grad(gy, None, weight, 1.0, stride, padding)
        if mask is not None:
            gx = torch.ops.fastprogan.lrelu_grad(gx, mask, slope)
    if _wanted(ctx, 2):
        xm = x if mask is None else torch.ops.fastprogan.lrelu_grad(x, mask, slope)
        gw = _weight_grad(gy, xm, weight, stride, padding)
    return gx, None, gw, None, None, None


_conv2d_masked_op.register_autograd(_conv2d_masked_backward, setup_context=_conv2d_masked_setup)


# ----------------------------------------------------------------------------------------------------
# fastprogan::conv_transpose2x_masked: conv_transpose2d(x * lrelu'(mask), w, stride 2, pad 1), the input
# gradient of the stride-2 4x4 conv (the parity kernel), linear in x and w (every order)


@torch.library.custom_op(
    "fastprogan::conv_transpose2x_masked",
    mutates_args=(),
    schema="(Tensor x, Tensor? mask, Tensor weight, float negative_slope) -> Tensor",
)
def _conv_transpose2x_masked_op(
    x: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor, negative_slope: float
) -> torch.Tensor:
    kernels = load_kernels("conv2d_bias_act")
    return kernels.upscale_conv2d_act(x, weight, None, negative_slope, "none", 1.0, mask=mask)[0]


def _empty_transpose2x(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    shape = (n, weight.shape[1], 2 * h, 2 * w)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=dense_format(x))


@_conv_transpose2x_masked_op.register_fake
def _(x, mask, weight, negative_slope):
    if mask is not None and dense_format(mask) != dense_format(x):
        x = x.contiguous(memory_format=dense_format(mask))
    return _empty_transpose2x(x, weight)


def _conv_transpose2x_masked_setup(ctx, inputs, output):
    _note_tensor_inputs(ctx, inputs)
    x, mask, weight, negative_slope = inputs
    ctx.slope = negative_slope
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, mask, weight)


def _conv_transpose2x_masked_backward(ctx, gy):
    if gy is None:
        return None, None, None, None
    x, mask, weight = ctx.saved_tensors
    gx = gw = None
    if _wanted(ctx, 0):  # the adjoint: the stride-2 4x4 conv with the same weight
        gx = torch.ops.fastprogan.conv2d_masked(gy, None, weight, 1.0, 2, 1)
        if mask is not None:
            gx = torch.ops.fastprogan.lrelu_grad(gx, mask, ctx.slope)
    if _wanted(ctx, 2):
        xm = x if mask is None else torch.ops.fastprogan.lrelu_grad(x, mask, ctx.slope)
        gw = torch.ops.aten.convolution_backward(
            gy, xm, weight, None, [2, 2], [1, 1], [1, 1], True, [0, 0], 1, [False, True, False]
        )[1]
    return gx, None, gw, None


_conv_transpose2x_masked_op.register_autograd(
    _conv_transpose2x_masked_backward, setup_context=_conv_transpose2x_masked_setup
)


# ----------------------------------------------------------------------------------------------------
# First-order D backward from the forward's sign bits: fastprogan::conv_input_grad_bits and
# fastprogan::conv_weight_grad_bits. Linear in g (and in weight / x); their backward (the double
# backward of a D layer) is built from these ops, aten convs and _apply_bits.


@torch.library.custom_op(
    "fastprogan::conv_input_grad_bits",
    mutates_args=(),
    schema="(Tensor g, Tensor bits, Tensor weight, float negative_slope, int stride, int padding) -> Tensor",
)
def _conv_input_grad_bits_op(
    g: torch.Tensor,
    bits: torch.Tensor,
    weight: torch.Tensor,
    negative_slope: float,
    stride: int,
    padding: int,
) -> torch.Tensor:
    kernels = load_kernels("conv2d_bias_act")
    w = weight.to(g.dtype)
    if stride == 1:
        return kernels.conv2d_act(
            g, _transposed_flip(w), None, negative_slope, "none", 1.0, 1, padding, bits=bits
        )[0]
    return kernels.upscale_conv2d_act(g, w, None, negative_slope, "none", 1.0, bits=bits)[0]


@_conv_input_grad_bits_op.register_fake
def _(g, bits, weight, negative_slope, stride, padding):
    if stride == 1:
        return _empty_out(g, _transposed_flip(weight), 1, padding)
    return _empty_transpose2x(g, weight)


def _conv_input_grad_bits_setup(ctx, inputs, output):
    _note_tensor_inputs(ctx, inputs)
    g, bits, weight, negative_slope, stride, padding = inputs
    ctx.conf = (negative_slope, stride, padding)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(g, bits, weight)


def _conv_input_grad_bits_backward(ctx, ggx):
    if ggx is None:
        return None, None, None, None, None, None
    g, bits, weight = ctx.saved_tensors
    slope, stride, padding = ctx.conf
    dg = dw = None
    if _wanted(ctx, 0):
        dg = _apply_bits(F.conv2d(ggx, weight.to(ggx.dtype), stride=stride, padding=padding), bits, slope)
    if _wanted(ctx, 2):
        gw = torch.ops.fastprogan.conv_weight_grad_bits(
            g, bits, ggx, slope, weight.shape[2], stride, padding
        )[0]
        dw = gw.to(weight.dtype)
    return dg, None, dw, None, None, None


_conv_input_grad_bits_op.register_autograd(
    _conv_input_grad_bits_backward, setup_context=_conv_input_grad_bits_setup
)


@torch.library.custom_op(
    "fastprogan::conv_weight_grad_bits",
    mutates_args=(),
    schema="(Tensor g, Tensor bits, Tensor x, float negative_slope, int ksize, int stride, int padding) "
    "-> (Tensor, Tensor)",
)
def _conv_weight_grad_bits_op(
    g: torch.Tensor,
    bits: torch.Tensor,
    x: torch.Tensor,
    negative_slope: float,
    ksize: int,
    stride: int,
    padding: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    kernels = load_kernels("conv2d_bias_act")
    gw, gb, _ = kernels.conv2d_weight_grad(g, bits, x, negative_slope, ksize, stride, padding)
    return gw, gb


@_conv_weight_grad_bits_op.register_fake
def _(g, bits, x, negative_slope, ksize, stride, padding):
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    gw = x.new_empty((g.shape[1], x.shape[1], ksize, ksize), dtype=dtype)
    return gw, x.new_empty((g.shape[1],), dtype=dtype)


def _conv_weight_grad_bits_setup(ctx, inputs, output):
    _note_tensor_inputs(ctx, inputs)
    g, bits, x, negative_slope, _, stride, padding = inputs
    ctx.conf = (negative_slope, stride, padding)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(g, bits, x)


def _conv_weight_grad_bits_backward(ctx, ggw, ggb):
    g, bits, x = ctx.saved_tensors
    slope, stride, padding = ctx.conf
    dg = dx = None
    if _wanted(ctx, 0) and (ggw is not None or ggb is not None):
        t = None if ggw is None else F.conv2d(x, ggw.to(x.dtype), stride=stride, padding=padding)
        if ggb is not None:
            b = ggb.to(x.dtype).view(1, -1, 1, 1)
            t = b.expand(g.shape) if t is None else t + b
        dg = _apply_bits(t, bits, slope)
    if _wanted(ctx, 2) and ggw is not None:
        dx = torch.ops.fastprogan.conv_input_grad_bits(g, bits, ggw.to(x.dtype), slope, stride, padding)
    return dg, None, dx, None, None, None, None


_conv_weight_grad_bits_op.register_autograd(
    _conv_weight_grad_bits_backward, setup_context=_conv_weight_grad_bits_setup
)


# ----------------------------------------------------------------------------------------------------
# fastprogan::conv2d_act: lrelu(conv(x, w) + b), D path (every order)


@torch.library.custom_op(
    "fastprogan::conv2d_act",
    mutates_args=(),
    schema="(Tensor x, Tensor weight, Tensor? bias, float negative_slope, int stride, int padding) "
    "-> (Tensor, Tensor)",
)
def _conv2d_act_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    negative_slope: float,
    stride: int,
    padding: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    kernels = load_kernels("conv2d_bias_act")
    return kernels.conv2d_act(x, weight, bias, negative_slope, "lrelu", 1.0, stride, padding)


def _empty_bits(out: torch.Tensor) -> torch.Tensor:
    n, c, oh, ow = out.shape
    return out.new_empty((n * oh * ow, -(-c // 32)), dtype=torch.int32)


@_conv2d_act_op.register_fake
def _(x, weight, bias, negative_slope, stride, padding):
    out = _empty_out(x, weight, stride, padding)
    return out, _empty_bits(out)


def _conv2d_act_setup(ctx, inputs, output):
    _note_tensor_inputs(ctx, inputs)
    x, weight, bias, negative_slope, stride, padding = inputs
    ctx.conf = (negative_slope, stride, padding)
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, weight, *output)


def _conv_backward_from_masked(ctx, gy, grad_bias, x, weight):
    """(gx, gw, gb) of a stride-1 3x3 conv given the masked output gradient gy (and its sum over N, H,
    W): the G path, whose pixel-norm gradient is materialised."""
    gx = _input_grad(gy, None, weight, 1.0, 1, 1) if _wanted(ctx, 0) else None
    gw = _weight_grad(gy, x, weight, 1, 1) if _wanted(ctx, 1) else None
    gb = None if grad_bias is None else grad_bias.to(ctx.bias_dtype)
    return gx, gw, gb


def _conv2d_act_backward(ctx, g, _grad_bits):
    if g is None:
        return None, None, None, None, None, None
    x, weight, out, bits = ctx.saved_tensors
    slope, stride, padding = ctx.conf
    need_b = ctx.bias_dtype is not None and _wanted(ctx, 2)
    need_w = _wanted(ctx, 1)
    if not (need_w or need_b):
        # Only the input gradient (the penalty's create_graph pass): the mask (the saved output, whose
        # lrelu_grad double backward is one kernel) is the kernel's prologue.
        return _input_grad(g, out, weight, slope, stride, padding), None, None, None, None, None
    # First order with weights: g and the sign bits are read, no masked gradient is written: the
    # input gradient (sign-bit prologue) and the weight-gradient kernel each read them once.
    gx = gw = gb = None
    if _wanted(ctx, 0):
        gx = torch.ops.fastprogan.conv_input_grad_bits(g, bits, weight, slope, stride, padding)
    gw32, gb32 = torch.ops.fastprogan.conv_weight_grad_bits(
        g, bits, x, slope, weight.shape[2], stride, padding
    )
    if need_w:
        gw = gw32.to(weight.dtype)
    if need_b:
        gb = gb32.to(ctx.bias_dtype)
    return gx, gw, gb, None, None, None


_conv2d_act_op.register_autograd(_conv2d_act_backward, setup_context=_conv2d_act_setup)


# ----------------------------------------------------------------------------------------------------
# fastprogan::conv2d_act_pixel_norm: pixel_norm(lrelu(conv(x, w) + b)), G path (first order)


@torch.library.custom_op(
    "fastprogan::conv2d_act_pixel_norm_grad",
    mutates_args=(),
    schema="(Tensor grad, Tensor out, Tensor rstd, float negative_slope) -> (Tensor, Tensor)",
)
def _conv2d_act_pixel_norm_grad_op(
    grad: torch.Tensor, out: torch.Tensor, rstd: torch.Tensor, negative_slope: float
) -> tuple[torch.Tensor, torch.Tensor]:
    # The pixel-norm + lrelu gradient from the saved output: a = out / r, so
    # g_a = r g - a r^3 mean_c(g a) = r (g - out mean_c(g out)); g_v = g_a * lrelu'(out). fp32 math.
    gf, of = grad.to(rstd.dtype), out.to(rstd.dtype)
    r = rstd.unsqueeze(1)  # [N, 1, H, W]
    g_a = r * (gf - of * (gf * of).mean(dim=1, keepdim=True))
    g_v = torch.where(of > 0, g_a, g_a * negative_slope)
    return g_v.to(out.dtype).contiguous(memory_format=dense_format(out)), g_v.sum(dim=(0, 2, 3))


@_conv2d_act_pixel_norm_grad_op.register_fake
def _(grad, out, rstd, negative_slope):
    return empty_like_dense(out), out.new_empty(out.shape[1], dtype=rstd.dtype)


def _first_order_only(ctx, *grads):
    raise RuntimeError(
        "fastprogan.ops.conv2d_bias_act(pixel_norm=True) is differentiable once only (the generator's "
        "layers); its backward was differentiated again (create_graph=True). Use impl='ref' if you need "
        "higher-order gradients through pixel norm."
    )


_conv2d_act_pixel_norm_grad_op.register_autograd(
    _first_order_only, setup_context=lambda ctx, inputs, output: None
)


@torch.library.custom_op(
    "fastprogan::conv2d_act_pixel_norm",
    mutates_args=(),
    schema="(Tensor x, Tensor weight, Tensor? bias, float negative_slope, float eps) -> (Tensor, Tensor)",
)
def _conv2d_act_pixel_norm_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, negative_slope: float, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    kernels = load_kernels("conv2d_bias_act")
    return kernels.conv2d_act(x, weight, bias, negative_slope, "lrelu_pixel_norm", eps, 1, 1)


@_conv2d_act_pixel_norm_op.register_fake
def _(x, weight, bias, negative_slope, eps):
    out = _empty_out(x, weight, 1, 1)
    rstd_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return out, x.new_empty((out.shape[0], *out.shape[2:]), dtype=rstd_dtype)


def _conv2d_act_pixel_norm_setup(ctx, inputs, output):
    _note_tensor_inputs(ctx, inputs)
    x, weight, bias, negative_slope, _ = inputs
    ctx.conf = (negative_slope, 1, 1)
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zeros tensor for rstd's (absent) gradient
    ctx.save_for_backward(x, weight, output[0], output[1])


def _conv2d_act_pixel_norm_backward(ctx, g, _grad_rstd):
    if g is None:
        return None, None, None, None, None
    x, weight, out, rstd = ctx.saved_tensors
    slope = ctx.conf[0]
    gy, grad_bias = torch.ops.fastprogan.conv2d_act_pixel_norm_grad(g, out, rstd, slope)
    need_b = ctx.bias_dtype is not None and _wanted(ctx, 2)
    gx, gw, gb = _conv_backward_from_masked(ctx, gy, grad_bias if need_b else None, x, weight)
    return gx, gw, gb, None, None


_conv2d_act_pixel_norm_op.register_autograd(
    _conv2d_act_pixel_norm_backward, setup_context=_conv2d_act_pixel_norm_setup
)


# ----------------------------------------------------------------------------------------------------
# fastprogan::upscale_conv2d_act: G's conv0_up, nearest 2x + 3x3 conv + bias + lrelu (+ pixel norm),
# first order


@torch.library.custom_op(
    "fastprogan::upscale_conv2d_act",
    mutates_args=(),
    schema="(Tensor x, Tensor weight4t, Tensor? bias, float negative_slope, bool pixel_norm, float eps) "
    "-> (Tensor, Tensor)",
)
def _upscale_conv2d_act_op(
    x: torch.Tensor,
    weight4t: torch.Tensor,
    bias: torch.Tensor | None,
    negative_slope: float,
    pixel_norm: bool,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    kernels = load_kernels("conv2d_bias_act")
    epilogue = "lrelu_pixel_norm" if pixel_norm else "lrelu"
    return kernels.upscale_conv2d_act(x, weight4t, bias, negative_slope, epilogue, eps)


@_upscale_conv2d_act_op.register_fake
def _(x, weight4t, bias, negative_slope, pixel_norm, eps):
    n, _, h, w = x.shape
    out = torch.empty(
        (n, weight4t.shape[1], 2 * h, 2 * w), dtype=x.dtype, device=x.device, memory_format=dense_format(x)
    )
    rstd_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return out, x.new_empty((n, 2 * h, 2 * w) if pixel_norm else (0,), dtype=rstd_dtype)


def _upscale_conv2d_act_setup(ctx, inputs, output):
    _note_tensor_inputs(ctx, inputs)
    x, weight4t, bias, negative_slope, pixel_norm, _ = inputs
    ctx.slope, ctx.pixel_norm = negative_slope, pixel_norm
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zeros tensor for rstd's (absent) gradient
    ctx.save_for_backward(x, weight4t, output[0], output[1])


def _upscale_conv2d_act_backward(ctx, g, _grad_rstd):
    if g is None:
        return None, None, None, None, None, None
    x, weight4t, out, rstd = ctx.saved_tensors
    need_b = ctx.bias_dtype is not None and _wanted(ctx, 2)
    if ctx.pixel_norm:
        gy, grad_bias = torch.ops.fastprogan.conv2d_act_pixel_norm_grad(g, out, rstd, ctx.slope)
    elif need_b:
        gy, grad_bias = torch.ops.fastprogan.lrelu_grad_bias(g, out, ctx.slope)
    else:
        gy, grad_bias = torch.ops.fastprogan.lrelu_grad(g, out, ctx.slope), None
    gx = gw = None
    if _wanted(ctx, 0):  # conv_transpose's adjoint: the stride-2 4x4 conv with the same weight
        gx = torch.ops.fastprogan.conv2d_masked(gy, None, weight4t, 1.0, 2, 1)
    if _wanted(ctx, 1):
        gw = torch.ops.aten.convolution_backward(
            gy, x, weight4t, None, [2, 2], [1, 1], [1, 1], True, [0, 0], 1, [False, True, False]
        )[1]
    gb = grad_bias.to(ctx.bias_dtype) if need_b else None
    return gx, gw, gb, None, None, None


_upscale_conv2d_act_op.register_autograd(
    _upscale_conv2d_act_backward, setup_context=_upscale_conv2d_act_setup
)


# ----------------------------------------------------------------------------------------------------
# Dispatch: impl="auto"

# Fraction of peak the Triton implicit GEMM is assumed to reach against cuDNN's (no measurement yet:
# a conservative guess until `fastprogan bench` writes a table).
TRITON_FLOP_EFFICIENCY = 0.6


def shape_key_for(x: torch.Tensor, weight: torch.Tensor, pixel_norm: bool) -> str:
    """The dispatch-table key of one call (shared by the ops and the bench candidates)."""
    n, c_in, h, w = x.shape
    return dispatch_table.shape_key(
        n=n, c_in=c_in, c_out=weight.shape[0], h=h, w=w, dtype=x.dtype, pixel_norm=pixel_norm
    )


def layer_passes(
    op: str,
    path: str,
    n: int,
    c_in: int,
    c_out: int,
    h: int,
    w: int,
    backward: bool = True,
    pixel_norm: bool = False,
    size: int = 4,
) -> list[tuple[str, float, float]]:
    """The modelled kernel passes of one layer: (who runs it, elements moved, FLOPs).

    ``op``: "conv2d_bias_act", "conv2d_downscale_bias_act" or "upscale_conv2d_bias_act"; ``path``:
    "triton" or "cudnn"; who: "triton" (a fused kernel), "cudnn" or "epilogue" (a Triton elementwise
    pass). Elements of ``size`` bytes per tensor read or written, as the traffic counter counts them
    (weights left out: small at these channels; the D path's sign bits are 1/(8 size) element each).
    cudnn forward = conv (read x, write y) + bias_act (read y, write out); triton forward = read x,
    write out (+ the sign bits on the D path). Backward with weight gradients, cudnn: lrelu_grad_bias
    (read g, out, write gy), input and weight gradient (cuDNN: read gy, write gx; read gy, x). Triton,
    D path (no pixel norm, not the upscale): the input gradient (read g, bits, write gx) and the
    weight-gradient kernel (read g, bits, x); G path: the pixel-norm gradient (read g, out, write gy),
    the input-gradient kernel, cuDNN's weight gradient.
    """
    down, up = op == "conv2d_downscale_bias_act", op == "upscale_conv2d_bias_act"
    oh, ow = (h // 2, w // 2) if down else (2 * h, 2 * w) if up else (h, w)
    xe, ye = n * c_in * h * w, n * c_out * oh * ow
    taps = 16 if down else 4 if up else 9  # per output pixel: 4x4 stride-2 conv, 2x2 parity, 3x3
    flops = 2 * taps * n * oh * ow * c_in * c_out
    d_path = path == "triton" and not (pixel_norm or up)
    bits = ye / (8 * size) if d_path else 0.0
    if path == "triton":
        passes = [("triton", xe + ye + bits, flops)]
    else:
        passes = [("cudnn", xe + ye, flops), ("epilogue", 2 * ye, 0.0)]
    if backward and d_path:
        passes += [("triton", ye + bits + xe, flops), ("triton", ye + bits + xe, flops)]
    elif backward:
        dgrad = "triton" if path == "triton" else "cudnn"
        passes += [("epilogue", 3 * ye, 0.0), (dgrad, ye + xe, flops), ("cudnn", ye + xe, flops)]
    return passes


def predicted_speedup(
    op: str,
    n: int,
    c_in: int,
    c_out: int,
    h: int,
    w: int,
    dtype: torch.dtype,
    backward: bool = True,
    pixel_norm: bool = False,
) -> float:
    """cuDNN + epilogue time / fused time: each pass max(bytes / bandwidth, FLOPs / peak), summed."""
    size = torch.empty((), dtype=dtype).element_size()
    peak = GPU_PEAK_FLOPS.get(dtype, GPU_PEAK_FLOPS[torch.float32])

    def seconds(path: str) -> float:
        total = 0.0
        for who, elements, flops in layer_passes(op, path, n, c_in, c_out, h, w, backward, pixel_norm, size):
            efficiency = TRITON_FLOP_EFFICIENCY if who == "triton" else 1.0
            total += max(elements * size / GPU_BANDWIDTH, flops / (peak * efficiency))
        return total

    return seconds("cudnn") / seconds("triton")


def conv_path(op: str, x: torch.Tensor, weight: torch.Tensor, pixel_norm: bool, impl: str) -> str:
    """Resolve ``impl`` to "ref", "cudnn" or "triton" for one call (raises if "triton" cannot run)."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"{op}: impl must be one of {CONV_IMPLS}, got {impl!r}")
    if impl in ("ref", "cudnn"):
        return impl
    c_out = weight.shape[0]
    if impl == "triton":
        if c_out > MAX_FUSED_C_OUT:
            raise RuntimeError(
                f"{op}: impl='triton' needs C_out <= {MAX_FUSED_C_OUT} (BLOCK_N = C_out), got {c_out}; "
                "use impl='cudnn'"
            )
        _resolve_triton(op, "triton", x, has_triton=True, kernel_dtype_ok=kernel_dtype_ok(x))
        return "triton"
    # auto: never the kernels off CUDA (the reference / fused-weight path stays, as before)
    if x.device.type != "cuda" or not kernel_dtype_ok(x):
        return "ref" if x.device.type != "cuda" else "cudnn"
    if c_out > MAX_FUSED_C_OUT:
        return "cudnn"
    choice = dispatch_table.lookup(op, shape_key_for(x, weight, pixel_norm), x.device)
    if choice in ("triton", "cudnn"):
        return choice
    backward = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    n, c_in, h, w = x.shape
    speedup = predicted_speedup(op, n, c_in, c_out, h, w, x.dtype, backward, pixel_norm)
    return "triton" if speedup >= SPEEDUP_THRESHOLD else "cudnn"


# Layers with impl="triton" on CPU (the interpreter) keep conv + the epilogue kernel unless this is
# True: the interpreter costs ~0.3 s per conv launch at training shapes, which made the 16-step
# impl="triton" training test (tests/training/test_triton_training.py) run for over 15 minutes instead
# of seconds. The ops themselves always honour impl="triton"; tests/nn/test_fused_conv_layers.py sets it.
FUSED_LAYERS_UNDER_INTERPRETER = False


def layer_impl(impl: str, x: torch.Tensor, c_out: int) -> str | None:
    """The ``impl`` a ``fastprogan.nn`` layer passes to the fused conv ops, or None: keep its own path
    (conv, then the ``bias_act`` epilogue with ``impl``). None for "auto" off CUDA (the layers' CPU
    choices, e.g. the fused-weight resampling convs, stay), for "triton" above C_out = 128 (where the
    kernel has no config, so "triton" forces the epilogue kernel only, as before), and for "triton" on
    CPU unless :data:`FUSED_LAYERS_UNDER_INTERPRETER`."""
    if impl == "auto" and x.device.type != "cuda":
        return None
    if impl == "triton" and x.device.type == "cpu" and not FUSED_LAYERS_UNDER_INTERPRETER:
        return None
    if impl == "triton" and c_out > MAX_FUSED_C_OUT:
        return None
    return impl


# ----------------------------------------------------------------------------------------------------
# Public functions


def _check_conv_args(op: str, x, weight, bias, negative_slope: float, eps: float) -> None:
    check_conv3x3_args(op, x, weight, bias)
    check_bias_act_args(x, None, negative_slope, eps)


def _epilogue_impl(x: torch.Tensor) -> str:
    # The "cudnn" path's epilogue: bias_act's own choice, except on meta tensors (the traffic counter
    # models the GPU path there, where "auto" would pick the reference).
    return "triton" if x.device.type == "meta" else "auto"


def conv2d_bias_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    pixel_norm: bool = False,
    eps: float = DEFAULT_EPS,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """3x3 conv (stride 1, pad 1) + bias + leaky-ReLU (+ pixel norm over channels), fused.

    x [N, C_in, H, W] (fp32/fp16/bf16, NCHW or channels_last), weight [C_out, C_in, 3, 3] (any float
    dtype, cast to x's), bias [C_out] -> [N, C_out, H, W] in x's dtype and layout. ``impl``: "auto",
    "triton", "cudnn" or "ref" (module docstring). Every derivative order without pixel norm, first
    order with it.
    """
    _check_conv_args("conv2d_bias_act", x, weight, bias, negative_slope, eps)
    which = conv_path("conv2d_bias_act", x, weight, pixel_norm, impl)
    if which == "ref":
        return conv2d_bias_act_ref(x, weight, bias, negative_slope, pixel_norm, eps)
    w = weight.to(x.dtype)
    if which == "cudnn":
        h = F.conv2d(x, w, padding=1)
        return bias_act(h, bias, negative_slope, pixel_norm, eps, impl=_epilogue_impl(x))
    if pixel_norm:
        return torch.ops.fastprogan.conv2d_act_pixel_norm(x, w, bias, float(negative_slope), float(eps))[0]
    return torch.ops.fastprogan.conv2d_act(x, w, bias, float(negative_slope), 1, 1)[0]


def conv2d_downscale_bias_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """3x3 conv (pad 1) + 2x2 average pool + bias + leaky-ReLU as one stride-2 4x4 conv kernel.

    x [N, C_in, H, W] (H, W even) -> [N, C_out, H/2, W/2]; dtypes, layouts and ``impl`` as
    :func:`conv2d_bias_act`. Every derivative order (D's conv1_down, under the WGAN-GP penalty).
    """
    _check_conv_args("conv2d_downscale_bias_act", x, weight, bias, negative_slope, 1.0)
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(
            f"conv2d_downscale_bias_act: x needs an even height and width, got {tuple(x.shape[2:])}"
        )
    which = conv_path("conv2d_downscale_bias_act", x, weight, False, impl)
    if which == "ref":
        return conv2d_downscale_bias_act_ref(x, weight, bias, negative_slope)
    w4 = downscale_conv_weight(weight.to(x.dtype))  # [C_out, C_in, 4, 4] x 0.25, differentiable
    if which == "cudnn":
        h = F.conv2d(x, w4, stride=2, padding=1)
        return bias_act(h, bias, negative_slope, impl=_epilogue_impl(x))
    return torch.ops.fastprogan.conv2d_act(x, w4, bias, float(negative_slope), 2, 1)[0]


def upscale_conv2d_bias_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    pixel_norm: bool = True,
    eps: float = DEFAULT_EPS,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """Nearest 2x upsample + 3x3 conv + bias + leaky-ReLU (+ pixel norm): G's conv0_up in one kernel.

    x [N, C_in, H, W] -> [N, C_out, 2H, 2W]; four 2x2 parity convs of the low-res input with the folded
    weights of ``resample_weight.upscale_conv_weight`` (no upsampled tensor, no zero taps). Dtypes,
    layouts and ``impl`` as :func:`conv2d_bias_act`. First order (the generator's layer).
    """
    _check_conv_args("upscale_conv2d_bias_act", x, weight, bias, negative_slope, eps)
    which = conv_path("upscale_conv2d_bias_act", x, weight, pixel_norm, impl)
    if which == "ref":
        return upscale_conv2d_bias_act_ref(x, weight, bias, negative_slope, pixel_norm, eps)
    w = weight.to(x.dtype)
    if which == "cudnn":
        h = upscale_conv2d(x, w, impl="auto")
        return bias_act(h, bias, negative_slope, pixel_norm, eps, impl=_epilogue_impl(x))
    w4t = upscale_conv_weight(w)  # [C_in, C_out, 4, 4], differentiable
    return torch.ops.fastprogan.upscale_conv2d_act(
        x, w4t, bias, float(negative_slope), bool(pixel_norm), float(eps)
    )[0]


# ----------------------------------------------------------------------------------------------------
# Candidates for the bench harness


def candidates(
    op: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pixel_norm: bool = False
) -> dict[str, Callable[[], torch.Tensor]]:
    """The per-shape choices of ``impl="auto"`` for ``op`` at this call, each as a zero-argument callable.

    For ``fastprogan bench``: time every callable (forward, or forward + ``.backward`` of its output)
    and write the winner under ``dispatch_table.shape_key`` = :func:`shape_key_for` (x, weight,
    pixel_norm) and the op name. ``op``: "conv2d_bias_act", "conv2d_downscale_bias_act" or
    "upscale_conv2d_bias_act". Returns
    {"cudnn": cuDNN conv + Triton epilogue, "triton": the fused kernel} ("triton" omitted when C_out >
    128). The reference (``impl="ref"``) and torch.compile rows are the bench's own.
    """
    fns = {
        "conv2d_bias_act": conv2d_bias_act,
        "conv2d_downscale_bias_act": conv2d_downscale_bias_act,
        "upscale_conv2d_bias_act": upscale_conv2d_bias_act,
    }
    if op not in fns:
        raise ValueError(f"candidates: op must be one of {sorted(fns)}, got {op!r}")
    fn = fns[op]
    extra = {} if op == "conv2d_downscale_bias_act" else {"pixel_norm": pixel_norm}
    impls = ["cudnn"] + (["triton"] if weight.shape[0] <= MAX_FUSED_C_OUT else [])
    return {name: (lambda name=name: fn(x, weight, bias, **extra, impl=name)) for name in impls}
