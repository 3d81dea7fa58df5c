"""bias_act on the Triton path (interpreter on CPU) against bias_act_ref: forward, backward, double
backward, layouts, dtypes, registration (opcheck, fake tensors, torch.compile), autocast."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from fastprogan import ops
from fastprogan.ops._common import resolve_impl
from fastprogan.ops.bias_act import lrelu_grad

# Every ProGAN stage's channel count at small spatial size, odd sizes (C = 1, 3, 17, 513; 5x7), batch 3,
# 2-D inputs (dense layers). C = 513 exercises the looped 2-pass pixel-norm kernels.
SHAPES = [
    (3, 1, 5, 7),
    (3, 3, 5, 7),
    (3, 17, 5, 7),
    (2, 513, 3, 3),
    (3, 512, 4, 4),
    (3, 256, 4, 4),
    (3, 128, 4, 4),
    (3, 64, 8, 8),
    (3, 32, 8, 8),
    (3, 16, 16, 16),
    (5, 3),
    (3, 513),
]
LAYOUTS = ["nchw", "channels_last", "view"]


def make_input(shape, layout, dtype=torch.float32, seed=0):
    """A random x of ``shape`` in the given memory layout (``view``: a non-dense strided view)."""
    g = torch.Generator().manual_seed(seed)
    if layout == "view":
        if len(shape) == 2:
            return torch.randn(shape[::-1], generator=g).to(dtype).t()  # transposed: strides (1, N)
        n, c, h, w = shape
        return torch.randn(n, c, h, w + 3, generator=g).to(dtype)[..., 1 : w + 1]  # sliced width
    x = torch.randn(shape, generator=g).to(dtype)
    if layout == "channels_last" and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def run_both(x, bias, slope, pn, grad, dtype_ref=None):
    """(y, gx, gb) from the Triton op and from the reference (optionally on inputs cast to dtype_ref)."""
    out = []
    for impl in ("triton", "ref"):
        xi = x if dtype_ref is None or impl == "triton" else x.to(dtype_ref)
        gi = grad if dtype_ref is None or impl == "triton" else grad.to(dtype_ref)
        xi = xi.detach().requires_grad_()
        bi = bias.detach().requires_grad_()
        y = ops.bias_act(xi, bi, slope, pn, impl=impl)
        y.backward(gi)
        out.append((y.detach(), xi.grad, bi.grad))
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pixel_norm", [False, True], ids=["lrelu", "pixelnorm"])
def test_fp32_forward_backward_match_reference(shape, layout, pixel_norm, check_close):
    x = make_input(shape, layout)
    bias = torch.randn(shape[1])
    grad = torch.randn(shape)
    (y, gx, gb), (y_ref, gx_ref, gb_ref) = run_both(x, bias, 0.2, pixel_norm, grad)
    check_close(y, y_ref, rtol=1e-5, atol=1e-6, what="forward")
    check_close(gx, gx_ref, rtol=1e-5, atol=1e-5, what="grad x")
    check_close(gb, gb_ref, rtol=1e-4, atol=1e-4, what="grad bias")
    if layout == "channels_last" and x.ndim == 4:
        assert y.is_contiguous(memory_format=torch.channels_last)  # layout preserved, no hidden copy
        assert gx.is_contiguous(memory_format=torch.channels_last)
    assert y.dtype == x.dtype and gb.dtype == bias.dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(
    "shape, layout",
    [((3, 17, 5, 7), "channels_last"), ((3, 512, 4, 4), "nchw"), ((2, 513, 3, 3), "view"), ((5, 3), "nchw")],
    ids=str,
)
@pytest.mark.parametrize("pixel_norm", [False, True], ids=["lrelu", "pixelnorm"])
def test_half_precision_three_way(dtype, shape, layout, pixel_norm, check_3way):
    x = make_input(shape, layout, dtype)
    bias = torch.randn(shape[1])  # fp32 parameter with half activations, cast inside
    grad = torch.randn(shape).to(dtype)
    (y, gx, gb), (y_lo, gx_lo, gb_lo) = run_both(x, bias, 0.2, pixel_norm, grad)
    _, (y32, gx32, gb32) = run_both(x, bias, 0.2, pixel_norm, grad, dtype_ref=torch.float32)
    assert y.dtype == dtype and gx.dtype == dtype and gb.dtype == torch.float32
    check_3way(y, y_lo, y32, atol=1e-3, what="forward")
    check_3way(gx, gx_lo, gx32, atol=1e-3, what="grad x")
    check_3way(gb, gb_lo, gb32, atol=1e-2, what="grad bias")


@pytest.mark.parametrize("slope", [0.0, 1.0], ids=["relu", "linear"])
@pytest.mark.parametrize("pixel_norm", [False, True], ids=["lrelu", "pixelnorm"])
def test_relu_and_linear_slopes(slope, pixel_norm, check_close):
    x = make_input((3, 17, 5, 7), "nchw")
    x[0, 0, 0, :3] = torch.tensor([0.0, -0.0, 1e-30])  # exact zeros: lrelu' decided like torch's (x > 0)
    bias = torch.randn(17)
    bias[0] = 0.0
    grad = torch.randn(x.shape)
    (y, gx, gb), (y_ref, gx_ref, gb_ref) = run_both(x, bias, slope, pixel_norm, grad)
    check_close(y, y_ref, rtol=1e-5, atol=1e-6, what="forward")
    check_close(gx, gx_ref, rtol=1e-5, atol=1e-5, what="grad x")
    check_close(gb, gb_ref, rtol=1e-4, atol=1e-4, what="grad bias")


def test_no_bias(check_close):
    x = make_input((3, 17, 5, 7), "channels_last").requires_grad_()
    for pn in (False, True):
        y = ops.bias_act(x, None, 0.2, pn, impl="triton")
        check_close(y, ops.bias_act_ref(x, None, 0.2, pn), rtol=1e-5, atol=1e-6, what=f"pn={pn}")
        (gx,) = torch.autograd.grad(y.square().sum(), x)
        (gx_ref,) = torch.autograd.grad(ops.bias_act_ref(x, None, 0.2, pn).square().sum(), x)
        check_close(gx, gx_ref, rtol=1e-5, atol=1e-5, what=f"grad pn={pn}")


def _f64(shape, layout="nchw", seed=0):
    return make_input(shape, layout, torch.float64, seed).requires_grad_()


@pytest.mark.parametrize(
    "shape, layout", [((2, 3, 3, 3), "nchw"), ((2, 3, 2, 2), "channels_last"), ((3, 4), "nchw")]
)
@pytest.mark.parametrize("pixel_norm", [False, True], ids=["lrelu", "pixelnorm"])
def test_gradcheck_fp64(shape, layout, pixel_norm):
    x, b = _f64(shape, layout), torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, b: ops.bias_act(x, b, 0.2, pixel_norm, impl="triton"), (x, b))


@pytest.mark.parametrize("slope", [0.2, 0.0], ids=["lrelu", "relu"])
@pytest.mark.parametrize("shape, layout", [((2, 3, 3, 3), "channels_last"), ((3, 4), "nchw")])
def test_gradgradcheck_d_path(slope, shape, layout):
    x, b = _f64(shape, layout), torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
    assert gradgradcheck(lambda x, b: ops.bias_act(x, b, slope, impl="triton"), (x, b))


def test_lrelu_grad_op_matches_and_is_twice_differentiable(check_close):
    out = ops.bias_act_ref(make_input((3, 5, 4, 4), "nchw"), None, 0.2)
    grad = torch.randn(out.shape)
    expected = torch.where(out > 0, grad, 0.2 * grad)
    check_close(lrelu_grad(grad, out, 0.2), expected, rtol=0, atol=0, what="lrelu_grad")
    g64 = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    out64 = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    assert gradcheck(lambda g: torch.ops.fastprogan.lrelu_grad(g, out64, 0.2), (g64,))
    assert gradgradcheck(lambda g: torch.ops.fastprogan.lrelu_grad(g, out64, 0.2), (g64,))


def _lrelu_grad_bias_expected(grad, out, slope):
    gx = torch.where(out > 0, grad, grad * slope).to(out.dtype)
    dims = [0] if out.ndim == 2 else [0, 2, 3]
    return gx, gx.sum(dims, dtype=torch.float32 if out.dtype != torch.float64 else torch.float64)


# Grad layouts the kernel reads through strides: same layout as out, the other dense layout, a
# broadcast (expanded: stride 0, as from score.sum()), a non-mergeable sliced view (copied first).
GRAD_LAYOUTS = ["same", "other", "expand", "view"]


def _grad_like(shape, layout, out_layout, dtype, seed=1):
    if layout == "expand":
        g = torch.randn(shape[0], generator=torch.Generator().manual_seed(seed)).to(dtype)
        return g.reshape([-1] + [1] * (len(shape) - 1)).expand(shape)
    if layout == "same":
        return make_input(shape, out_layout, dtype, seed)
    if layout == "other":
        return make_input(shape, "nchw" if out_layout == "channels_last" else "channels_last", dtype, seed)
    return make_input(shape, "view", dtype, seed)


@pytest.mark.parametrize("grad_layout", GRAD_LAYOUTS)
@pytest.mark.parametrize("out_layout", ["nchw", "channels_last"])
@pytest.mark.parametrize(
    "shape",
    # S > one program's pixels (several rows of partial sums, last tile partial); every tile bucket;
    # odd C; 2-D (dense layers).
    [(2, 3, 37, 37), (2, 17, 5, 7), (3, 40, 6, 6), (2, 130, 3, 3), (1, 1, 2, 2), (5, 3), (3, 513)],
    ids=str,
)
def test_lrelu_grad_bias_matches_torch(shape, out_layout, grad_layout, check_close):
    out = ops.bias_act_ref(make_input(shape, out_layout), None, 0.2)
    grad = _grad_like(shape, grad_layout, out_layout, torch.float32)
    gx, gb = torch.ops.fastprogan.lrelu_grad_bias(grad, out, 0.2)
    gx_ref, gb_ref = _lrelu_grad_bias_expected(grad, out, 0.2)
    check_close(gx, gx_ref, rtol=0, atol=0, what="grad_in")
    check_close(gb, gb_ref, rtol=1e-5, atol=1e-5, what="grad_bias")
    assert gx.stride() == out.stride() and gb.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("out_layout", ["nchw", "channels_last"])
def test_lrelu_grad_bias_half_precision(dtype, out_layout, check_close, check_3way):
    shape = (3, 17, 9, 11)
    out = ops.bias_act_ref(make_input(shape, out_layout, dtype), None, 0.2)
    grad = make_input(shape, "nchw", dtype, seed=1)
    gx, gb = torch.ops.fastprogan.lrelu_grad_bias(grad, out, 0.2)
    gx_ref, gb_ref = _lrelu_grad_bias_expected(grad, out, 0.2)
    assert gx.dtype == dtype and gb.dtype == torch.float32
    check_close(gx, gx_ref, rtol=0, atol=0, what="grad_in")  # one rounding of grad * slope, as torch
    check_close(gb, gb_ref, rtol=1e-5, atol=1e-5, what="grad_bias vs fp32 sum of grad_in")
    gx_lo = torch.where(out > 0, grad, grad * 0.2)
    gb_lo = gx_lo.sum((0, 2, 3))  # plain torch in the low dtype
    gb32 = torch.where(out.float() > 0, grad.float(), grad.float() * 0.2).sum((0, 2, 3))
    check_3way(gb, gb_lo, gb32, atol=1e-3, what="grad_bias")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_lrelu_grad_bias_double_backward_sums_the_bias_path_in_fp32(dtype, check_3way):
    # d/d(cotangent of grad_bias) of <backward, v> is a sum of lrelu_grad(v) over N, H, W: it must be
    # reduced in fp32 like the reference's fp32 bias sum (in bf16 it was 2-3x beyond the 3-way bound).
    shape = (3, 17, 9, 11)
    out = ops.bias_act_ref(make_input(shape, "nchw", dtype), None, 0.2)
    v = make_input(shape, "nchw", dtype, seed=2)

    def d2(fn, out, v):
        grad = torch.zeros(out.shape, dtype=out.dtype, requires_grad=True)
        ct_bias = torch.zeros(out.shape[1], dtype=torch.float32, requires_grad=True)
        _, gb = fn(grad, out)
        (g1,) = torch.autograd.grad((gb * ct_bias).sum(), grad, create_graph=True)
        return torch.autograd.grad((g1 * v).sum(), ct_bias)[0]

    def ref(grad, out):
        gx = torch.ops.aten.leaky_relu_backward(grad, out, 0.2, True)
        return gx, gx.float().sum((0, 2, 3))

    ours = d2(lambda g, o: torch.ops.fastprogan.lrelu_grad_bias(g, o, 0.2), out, v)
    check_3way(ours, d2(ref, out, v), d2(ref, out.float(), v.float()), atol=1e-3, what="d/d ct_bias")


def test_lrelu_grad_bias_is_deterministic():
    # Partial sums per program, then a fixed-order second stage: bitwise equal run to run.
    out = ops.bias_act_ref(make_input((2, 17, 37, 37), "nchw"), None, 0.2)
    grad = torch.randn(out.shape)
    first = torch.ops.fastprogan.lrelu_grad_bias(grad, out, 0.2)[1]
    assert torch.equal(first, torch.ops.fastprogan.lrelu_grad_bias(grad, out, 0.2)[1])


@pytest.mark.parametrize("shape, layout", [((2, 3, 3, 3), "channels_last"), ((3, 4), "nchw")])
def test_lrelu_grad_bias_gradcheck_and_gradgradcheck(shape, layout):
    # Both outputs are linear in grad (the bias-grad output's derivative: the mask times the broadcast
    # of its incoming grad); nothing flows to out.
    out = ops.bias_act_ref(make_input(shape, layout, torch.float64), None, 0.2)
    g = _f64(shape, layout, seed=1)
    fn = lambda g: torch.ops.fastprogan.lrelu_grad_bias(g, out, 0.2)
    assert gradcheck(fn, (g,))
    assert gradgradcheck(fn, (g,))


def test_pixel_norm_path_double_backward_raises():
    x, b = _f64((2, 3, 3, 3)), torch.randn(3, dtype=torch.float64, requires_grad=True)
    y = ops.bias_act(x, b, 0.2, pixel_norm=True, impl="triton")
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)  # first order: fine
    with pytest.raises(RuntimeError, match="differentiable once only"):
        gx.sum().backward()
    y = ops.bias_act(x, b, 0.2, pixel_norm=True, impl="triton")
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once only"):
        torch.autograd.grad(gx.sum(), b)


def test_bias_grad_is_deterministic():
    # Two-stage reduction without atomics: bitwise equal run to run (meaningful on a GPU; cheap here).
    x = make_input((3, 64, 8, 8), "channels_last").requires_grad_()
    b = torch.randn(64, requires_grad=True)
    grads = []
    for _ in range(2):
        y = ops.bias_act(x, b, 0.2, pixel_norm=True, impl="triton")
        grads.append(torch.autograd.grad(y.sum(), b)[0])
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize(
    "op, args",
    [
        ("bias_act", lambda x, b: (x, b, 0.2)),
        ("bias_act", lambda x, b: (x, None, 1.0)),
        ("bias_act_pixel_norm", lambda x, b: (x, b, 0.2, 1e-8)),
        ("lrelu_grad", lambda x, b: (torch.randn(x.shape, requires_grad=True), x.detach(), 0.2)),
        ("lrelu_grad_bias", lambda x, b: (torch.randn(x.shape, requires_grad=True), x.detach(), 0.2)),
        (
            "bias_act_pixel_norm_backward",
            lambda x, b: (torch.randn(x.shape), x.detach(), b.detach(), torch.rand(3, 2, 3) + 0.5, 0.2),
        ),
    ],
    ids=[
        "bias_act",
        "bias_act-nobias",
        "bias_act_pixel_norm",
        "lrelu_grad",
        "lrelu_grad_bias",
        "pixel_norm_backward",
    ],
)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_opcheck(op, args, layout):
    x = make_input((3, 5, 2, 3), layout).requires_grad_()
    b = torch.randn(5, requires_grad=True)
    torch.library.opcheck(getattr(torch.ops.fastprogan, op).default, args(x, b))


def test_autocast_accepts_fp32_bias_and_returns_activation_dtype(check_3way):
    x = torch.randn(3, 8, 6, 6)
    w = torch.randn(16, 8, 3, 3) * 0.1
    b = torch.randn(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = torch.nn.functional.conv2d(x, w, padding=1)
        assert h.dtype == torch.bfloat16
        y = ops.bias_act(h, b, 0.2, pixel_norm=True, impl="triton")
        y_lo = ops.bias_act_ref(h, b, 0.2, pixel_norm=True)
    assert y.dtype == torch.bfloat16
    check_3way(y, y_lo, ops.bias_act_ref(h.float(), b, 0.2, pixel_norm=True), atol=1e-3, what="autocast")


def test_auto_is_reference_on_cpu_and_triton_needs_the_interpreter(monkeypatch):
    x = torch.randn(2, 3, 4, 4)
    assert resolve_impl("bias_act", "auto", x, has_triton=True) == "ref"
    assert resolve_impl("bias_act", "triton", x, has_triton=True) == "triton"
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ops.bias_act(x, None, impl="triton")
    meta = torch.empty(2, 3, device="meta", dtype=torch.float64)
    with pytest.raises(RuntimeError, match="fp64 only under the interpreter"):
        resolve_impl("bias_act", "triton", meta, has_triton=True, kernel_dtype_ok=False)


def test_bad_arguments_fail_before_launch():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="bias"):
        ops.bias_act(x, torch.randn(4), impl="triton")
    with pytest.raises(ValueError, match="x must be"):
        ops.bias_act(torch.randn(2, 3, 4), None, impl="triton")
    with pytest.raises(ValueError, match="negative_slope"):
        ops.bias_act(x, None, -0.1, impl="triton")
    with pytest.raises(TypeError, match="floating"):
        ops.bias_act(x.long(), None, impl="triton")


def test_zero_second_order_terms_are_not_materialised():
    # lrelu_grad's derivative w.r.t. the saved output is 0: the penalty's backward must not run
    # bias_act's backward on materialised zeros (eager torch's leaky_relu double backward does, through
    # the whole forward graph of x_hat; docs/kernels.md, traffic).
    x = make_input((3, 5, 4, 4), "nchw").requires_grad_()
    b = torch.randn(5, requires_grad=True)
    w = torch.randn(5, 5, 1, 1, requires_grad=True)
    y = ops.bias_act(torch.nn.functional.conv2d(x, w), b, 0.2, impl="triton")
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    seen = []

    class Spy(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Spy():
        gx.square().sum().backward()
    assert x.grad is None and b.grad is None  # no gradient path: nothing accumulated, not even zeros
    assert w.grad is not None
    assert not any("zeros" in s or "bias_act" in s for s in seen), seen
