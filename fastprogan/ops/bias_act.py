"""bias_act: bias add + leaky-ReLU + optional pixel norm, the epilogue of every ProGAN layer.

Math: ``y = lrelu(x + b, slope)``, then optionally ``y *= rsqrt(mean_c(y**2) + eps)`` over channels,
for x [N, C] or [N, C, H, W] and b [C]. ``negative_slope=1.0`` is the linear activation (toRGB, D's
last dense); 0.0 is ReLU.

Layouts: NCHW or channels_last (the kernel's addressing follows x's strides, the output keeps x's
layout); any other view (slices, transposes) is copied to NCHW once before the kernel. 2-D inputs
(dense layers) too.

Dtypes: activations fp32, fp16, bf16 (fp64 on CPU under the interpreter, for gradcheck; on CUDA fp64
runs the reference). Math in fp32, output in x's dtype, except that ``x + b`` is first rounded to
x's dtype as the reference computes it: an fp16 sum beyond 65504 is +-inf on both paths (and NaN
after pixel norm), so the training NaN guard sees the overflow (docs/kernels.md, "Overflow").
The bias may be fp32 with half-precision x (parameters stay fp32): it is cast inside the kernel. Under ``torch.autocast`` nothing is cast for these
custom ops (autocast has no rule for them); they accept the fp32 parameters with the autocast
activation dtype and return that dtype, which is what the precision policy asks for.

Which parts run where: everything here is Triton (``fastprogan.kernels.bias_act``); the convolution
before it is cuDNN (``upscale_conv2d``, ``conv2d_downscale``, ``F.conv2d``).

Derivatives:
- D path (``pixel_norm=False``): every order. The forward is the op ``fastprogan::bias_act``, its
  backward is the op ``fastprogan::lrelu_grad(grad, out, slope)`` (lrelu' decided by out > 0, which
  equals x + b > 0 for every slope in [0, 1]), linear in grad; its own backward is lrelu_grad again
  (w.r.t. grad) and 0 w.r.t. out. The bias gradient is ``grad_x.sum`` over N, H, W (deterministic
  torch reduction, differentiable). The WGAN-GP penalty differentiates through this.
- G path (``pixel_norm=True``): first order. ``fastprogan::bias_act_pixel_norm`` saves x and the per-
  pixel rsqrt; ``fastprogan::bias_act_pixel_norm_backward`` recomputes from them in one kernel and
  reduces the bias gradient in two deterministic stages (no atomics). Differentiating that backward
  again (create_graph=True, then backward) raises RuntimeError.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastprogan.ops._common import (
    check_channels,
    check_same_device,
    check_tensor,
    empty_like_dense,
    kernel_dtype_ok,
    reduction_dtype,
    resolve_impl,
)
from fastprogan.ops._kernels import load_kernels
from fastprogan.ops.pixel_norm import DEFAULT_EPS, pixel_norm_ref

# ----------------------------------------------------------------------------------------------------
# Reference


def bias_act_ref(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    pixel_norm: bool = False,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """The oracle: unfused torch ops (pixel norm reduced in fp32)."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    if negative_slope != 1.0:
        x = F.leaky_relu(x, negative_slope)
    if pixel_norm:
        x = pixel_norm_ref(x, eps)
    return x


# ----------------------------------------------------------------------------------------------------
# torch.library registration: D path (twice differentiable)


@torch.library.custom_op(
    "fastprogan::lrelu_grad",
    mutates_args=(),
    schema="(Tensor grad, Tensor out, float negative_slope) -> Tensor",
)
def _lrelu_grad_op(grad: torch.Tensor, out: torch.Tensor, negative_slope: float) -> torch.Tensor:
    return load_kernels("bias_act").lrelu_grad(grad, out, negative_slope)


@_lrelu_grad_op.register_fake
def _(grad, out, negative_slope):
    return empty_like_dense(out)


def _lrelu_grad_setup(ctx, inputs, output):
    _, out, negative_slope = inputs
    ctx.negative_slope = negative_slope
    # A missing incoming gradient stays None (no zeros tensor, no kernel on it): see _bias_act_setup.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(out)


def _lrelu_grad_backward(ctx, grad_grad_in):
    # lrelu_grad is linear in grad with a piecewise-constant factor of out: d/dgrad is lrelu_grad
    # itself, d/dout is 0 (almost everywhere) and returned as None, not zeros. The derivative w.r.t.
    # grad is skipped when grad needs none (e.g. the penalty's constant ones from score.sum()).
    if grad_grad_in is None or not ctx.needs_input_grad[0]:
        return None, None, None
    (out,) = ctx.saved_tensors
    return torch.ops.fastprogan.lrelu_grad(grad_grad_in, out, ctx.negative_slope), None, None


_lrelu_grad_op.register_autograd(_lrelu_grad_backward, setup_context=_lrelu_grad_setup)


@torch.library.custom_op(
    "fastprogan::lrelu_grad_bias",
    mutates_args=(),
    schema="(Tensor grad, Tensor out, float negative_slope) -> (Tensor, Tensor)",
)
def _lrelu_grad_bias_op(
    grad: torch.Tensor, out: torch.Tensor, negative_slope: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return load_kernels("bias_act").lrelu_grad_bias(grad, out, negative_slope)


@_lrelu_grad_bias_op.register_fake
def _(grad, out, negative_slope):
    return empty_like_dense(out), out.new_empty(out.shape[1], dtype=reduction_dtype(out.dtype))


def _lrelu_grad_bias_setup(ctx, inputs, output):
    _, out, negative_slope = inputs
    ctx.negative_slope = negative_slope
    ctx.set_materialize_grads(False)  # see _bias_act_setup
    ctx.save_for_backward(out)


def _lrelu_grad_bias_backward(ctx, grad_grad_in, grad_grad_bias):
    # Both outputs are linear in grad through the same mask m = (out > 0 ? 1 : slope):
    # grad_in = m * grad, grad_bias[c] = sum_{n,h,w} m * grad. So d/dgrad of <gg_in, grad_in> +
    # <gg_bias, grad_bias> is m * (gg_in + gg_bias broadcast over N, H, W): lrelu_grad again (0 w.r.t. out).
    if not ctx.needs_input_grad[0] or (grad_grad_in is None and grad_grad_bias is None):
        return None, None, None
    (out,) = ctx.saved_tensors
    g = grad_grad_in
    if grad_grad_bias is not None:
        shape = [1, -1] + [1] * (out.ndim - 2)
        # Kept in grad_bias's fp32 until the sum: the gradient w.r.t. grad_grad_bias is a sum over N, H,
        # W, and autograd reduces an expand in the expanded tensor's dtype (bf16 summed 2-3x beyond the
        # 3-way bound in the bench's smoke; fp32 here, as the reference's fp32 bias sum does).
        gb = grad_grad_bias.reshape(shape)
        g = gb.expand(out.shape).to(out.dtype) if g is None else (g + gb).to(out.dtype)
    return torch.ops.fastprogan.lrelu_grad(g, out, ctx.negative_slope), None, None


_lrelu_grad_bias_op.register_autograd(_lrelu_grad_bias_backward, setup_context=_lrelu_grad_bias_setup)


@torch.library.custom_op(
    "fastprogan::bias_act", mutates_args=(), schema="(Tensor x, Tensor? bias, float negative_slope) -> Tensor"
)
def _bias_act_op(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float) -> torch.Tensor:
    return load_kernels("bias_act").bias_lrelu_forward(x, bias, negative_slope)


@_bias_act_op.register_fake
def _(x, bias, negative_slope):
    return empty_like_dense(x)


def _bias_act_setup(ctx, inputs, output):
    _, bias, negative_slope = inputs
    ctx.negative_slope = negative_slope
    ctx.bias_dtype = None if bias is None else bias.dtype
    # In the WGAN-GP loss.backward, the only gradient reaching the forward graph of x_hat through
    # lrelu_grad is its (zero) derivative w.r.t. out. Autograd would materialise it as a zeros tensor
    # and run this backward, the convs' backward, ... on zeros through the whole forward graph (eager
    # torch does: leaky_relu_backward's double backward returns zeros_like). Not materialising it
    # lets autograd skip that pass (~1.6 GB of the 12 GB D step at 128x128, docs/kernels.md).
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(output)  # the output decides lrelu' (out > 0 iff x + b > 0)


def _bias_act_backward(ctx, grad_out):
    if grad_out is None:  # no gradient flows in: none flows out
        return None, None, None
    (out,) = ctx.saved_tensors
    if ctx.bias_dtype is None or not ctx.needs_input_grad[1]:
        return torch.ops.fastprogan.lrelu_grad(grad_out, out, ctx.negative_slope), None, None
    # One pass: grad_x and its sum over N, H, W (per-program partial sums, then a fixed-order sum).
    grad_x, grad_bias = torch.ops.fastprogan.lrelu_grad_bias(grad_out, out, ctx.negative_slope)
    return grad_x, grad_bias.to(ctx.bias_dtype), None


_bias_act_op.register_autograd(_bias_act_backward, setup_context=_bias_act_setup)


# ----------------------------------------------------------------------------------------------------
# torch.library registration: G path (pixel norm, first order)


@torch.library.custom_op(
    "fastprogan::bias_act_pixel_norm_backward",
    mutates_args=(),
    schema="(Tensor grad, Tensor x, Tensor? bias, Tensor rstd, float negative_slope) -> (Tensor, Tensor)",
)
def _bias_act_pixel_norm_backward_op(
    grad: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None, rstd: torch.Tensor, negative_slope: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return load_kernels("bias_act").bias_act_pixel_norm_backward(grad, x, bias, rstd, negative_slope)


@_bias_act_pixel_norm_backward_op.register_fake
def _(grad, x, bias, rstd, negative_slope):
    return empty_like_dense(x), x.new_empty(x.shape[1], dtype=rstd.dtype)


def _pixel_norm_backward_setup(ctx, inputs, output):
    pass


def _pixel_norm_double_backward(ctx, *grads):
    raise RuntimeError(
        "fastprogan.ops.bias_act(pixel_norm=True) is differentiable once only (the generator's "
        "epilogue); its backward was differentiated again (create_graph=True). Use impl='ref' if you "
        "need higher-order gradients through pixel norm."
    )


_bias_act_pixel_norm_backward_op.register_autograd(
    _pixel_norm_double_backward, setup_context=_pixel_norm_backward_setup
)


@torch.library.custom_op(
    "fastprogan::bias_act_pixel_norm",
    mutates_args=(),
    schema="(Tensor x, Tensor? bias, float negative_slope, float eps) -> (Tensor, Tensor)",
)
def _bias_act_pixel_norm_op(
    x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return load_kernels("bias_act").bias_act_pixel_norm_forward(x, bias, negative_slope, eps)


@_bias_act_pixel_norm_op.register_fake
def _(x, bias, negative_slope, eps):
    rstd_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return empty_like_dense(x), x.new_empty((x.shape[0], *x.shape[2:]), dtype=rstd_dtype)


def _bias_act_pixel_norm_setup(ctx, inputs, output):
    x, bias, negative_slope, _ = inputs
    ctx.negative_slope = negative_slope
    ctx.has_bias = bias is not None
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.mark_non_differentiable(output[1])
    # rstd is non-differentiable: without this autograd would build a zeros gradient for it per call.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, bias, output[1])


def _bias_act_pixel_norm_backward(ctx, grad_out, _grad_rstd):
    if grad_out is None:
        return None, None, None, None
    x, bias, rstd = ctx.saved_tensors
    grad_x, grad_bias = torch.ops.fastprogan.bias_act_pixel_norm_backward(
        grad_out, x, bias, rstd, ctx.negative_slope
    )
    return grad_x, (grad_bias.to(ctx.bias_dtype) if ctx.has_bias else None), None, None


_bias_act_pixel_norm_op.register_autograd(
    _bias_act_pixel_norm_backward, setup_context=_bias_act_pixel_norm_setup
)


# ----------------------------------------------------------------------------------------------------
# Public function


def check_bias_act_args(
    x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float, eps: float
) -> None:
    check_tensor("x", x, ndims=(2, 4))
    if bias is not None:
        check_tensor("bias", bias, ndims=(1,))
        check_channels("bias", bias, x.shape[1], "one per channel of x")
        check_same_device(x=x, bias=bias)
    if not 0.0 <= negative_slope <= 1.0:
        raise ValueError(f"negative_slope must be in [0, 1], got {negative_slope}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    pixel_norm: bool = False,
    eps: float = DEFAULT_EPS,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """``lrelu(x + bias)`` then optional pixel norm over channels, in one Triton pass.

    x [N, C] or [N, C, H, W] (fp32/fp16/bf16, NCHW or channels_last), bias [C] (any float dtype, e.g.
    the fp32 parameter) -> same shape, dtype and layout as x. ``impl``: "auto" (Triton on CUDA, the
    reference elsewhere), "triton" (the kernel; on CPU only under TRITON_INTERPRET=1) or "ref".
    Twice differentiable without pixel norm, once with it (see the module docstring).
    """
    check_bias_act_args(x, bias, negative_slope, eps)
    which = resolve_impl("bias_act", impl, x, has_triton=True, kernel_dtype_ok=kernel_dtype_ok(x))
    if which == "ref":
        return bias_act_ref(x, bias, negative_slope, pixel_norm, eps)
    if pixel_norm:
        return torch.ops.fastprogan.bias_act_pixel_norm(x, bias, float(negative_slope), float(eps))[0]
    return torch.ops.fastprogan.bias_act(x, bias, float(negative_slope))


def lrelu_grad(grad: torch.Tensor, out: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """``grad * (out > 0 ? 1 : negative_slope)``: the input gradient of ``lrelu`` given its output.

    The registered op ``fastprogan::lrelu_grad`` (Triton), differentiable to every order w.r.t. grad.
    """
    check_tensor("grad", grad, ndims=(2, 4))
    check_tensor("out", out, ndims=(2, 4))
    if grad.shape != out.shape:
        raise ValueError(f"grad {tuple(grad.shape)} and out {tuple(out.shape)} must have the same shape")
    check_same_device(grad=grad, out=out)
    resolve_impl("lrelu_grad", "triton", out, has_triton=True, kernel_dtype_ok=kernel_dtype_ok(out))
    return torch.ops.fastprogan.lrelu_grad(grad, out, float(negative_slope))
