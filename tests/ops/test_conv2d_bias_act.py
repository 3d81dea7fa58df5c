"""conv2d_bias_act and conv2d_downscale_bias_act on the fused Triton path (interpreter on CPU) against
the composition of ``_ref`` ops: forward, backward, double backward (D path), layouts, dtypes,
dispatch and the bench candidates."""

import importlib

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from fastprogan.ops.conv2d_bias_act import (
    conv2d_bias_act,
    conv2d_bias_act_ref,
    conv2d_downscale_bias_act,
    conv2d_downscale_bias_act_ref,
    upscale_conv2d_bias_act,
    upscale_conv2d_bias_act_ref,
)

cba = importlib.import_module("fastprogan.ops.conv2d_bias_act")  # the module (ops exports the function)

OPS = {
    "conv": (conv2d_bias_act, conv2d_bias_act_ref),
    "down": (conv2d_downscale_bias_act, conv2d_downscale_bias_act_ref),
    "up": (upscale_conv2d_bias_act, upscale_conv2d_bias_act_ref),
}

# (op, n, c_in, c_out, h, w, layout, pixel_norm): every channel count of the issue (16-128, 3, 24, 48)
# appears as C_in and as C_out, batch 1 and 3, odd spatial sizes for the 3x3 conv, both layouts.
CASES = [
    ("conv", 3, 3, 16, 5, 7, "nchw", False),
    ("conv", 1, 16, 32, 6, 5, "channels_last", False),
    ("conv", 3, 24, 48, 3, 5, "channels_last", True),
    ("conv", 1, 48, 24, 7, 3, "nchw", True),
    ("conv", 1, 32, 64, 4, 4, "channels_last", False),
    ("conv", 1, 64, 128, 3, 3, "nchw", True),
    ("conv", 1, 128, 3, 4, 3, "channels_last", False),
    ("down", 3, 3, 48, 6, 4, "nchw", False),
    ("down", 1, 16, 128, 4, 6, "channels_last", False),
    ("down", 1, 64, 32, 8, 4, "nchw", False),
    ("down", 1, 128, 24, 4, 4, "channels_last", False),
    ("up", 3, 48, 16, 3, 5, "channels_last", True),
    ("up", 1, 3, 128, 2, 3, "nchw", True),
    ("up", 1, 128, 32, 3, 2, "nchw", True),
    ("up", 1, 24, 64, 2, 2, "channels_last", False),
]


def make(n, c_in, c_out, h, w, layout, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, generator=g).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c_out, c_in, 3, 3, generator=g) / (3 * c_in**0.5)  # fp32 parameters
    bias = torch.randn(c_out, generator=g)
    return x, weight, bias


def run(op, impl, x, weight, bias, pixel_norm, grad_seed=1, dtype_ref=None):
    fn = OPS[op][0] if impl == "triton" else OPS[op][1]
    xi = (x if dtype_ref is None else x.to(dtype_ref)).detach().requires_grad_()
    wi, bi = weight.detach().requires_grad_(), bias.detach().requires_grad_()
    kwargs = {} if op == "down" else {"pixel_norm": pixel_norm}
    y = fn(xi, wi, bi, 0.2, **kwargs, **({"impl": "triton"} if impl == "triton" else {}))
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_seed)).to(y.dtype)
    y.backward(g)
    return y.detach(), xi.grad, wi.grad, bi.grad


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fp32_forward_backward_match_reference(case, check_close):
    op, n, c_in, c_out, h, w, layout, pn = case
    x, weight, bias = make(n, c_in, c_out, h, w, layout)
    ours = run(op, "triton", x, weight, bias, pn)
    ref = run(op, "ref", x, weight, bias, pn)
    for what, a, e, tol in zip(
        ("forward", "grad x", "grad w", "grad b"), ours, ref, (1e-5, 1e-5, 1e-4, 1e-4)
    ):
        check_close(a, e, rtol=tol, atol=tol, what=what)
    if layout == "channels_last":
        assert ours[0].is_contiguous(memory_format=torch.channels_last)
    assert ours[0].dtype == x.dtype and ours[2].dtype == weight.dtype and ours[3].dtype == bias.dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(
    "case",
    [("conv", 3, 24, 32, 5, 3, "channels_last", True), ("down", 1, 16, 48, 4, 6, "nchw", False)],
    ids=str,
)
def test_half_precision_by_the_3way_rule(case, dtype, check_3way):
    op, n, c_in, c_out, h, w, layout, pn = case
    x, weight, bias = make(n, c_in, c_out, h, w, layout, dtype)
    ours = run(op, "triton", x, weight, bias, pn)
    lowp = run(op, "ref", x, weight, bias, pn)
    fp32 = run(op, "ref", x, weight, bias, pn, dtype_ref=torch.float32)
    for what, o, lo, tr in zip(("forward", "grad x", "grad w", "grad b"), ours, lowp, fp32):
        check_3way(o, lo, tr, atol=1e-2, what=what)
    assert ours[0].dtype == dtype


def test_input_gradient_only_uses_the_masked_prologue_and_matches(check_close):
    """Only x needs a gradient (the parameters are frozen): lrelu' is applied while loading g, and the
    result is differentiable again (create_graph=True)."""
    x, weight, bias = make(3, 16, 24, 5, 6, "channels_last")
    grads = []
    for fn in (lambda *a: conv2d_bias_act(*a, impl="triton"), conv2d_bias_act_ref):
        xi = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(fn(xi, weight, bias).square().sum(), xi, create_graph=True)
        (ggx,) = torch.autograd.grad(gx.square().sum(), xi)  # through conv2d_masked's backward
        grads.append((gx, ggx))
    check_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-5, what="input gradient")
    check_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-4, what="its gradient")


def test_input_gradient_with_trainable_weights_skips_the_weight_gradient(check_close):
    """The penalty's autograd.grad(score, x_hat, create_graph=True) with D's weights requiring grad:
    the engine will not use their gradients, so the op takes the prologue kernel (no lrelu_grad_bias
    pass, no weight-gradient conv), and the later backward to the weights still matches the reference."""
    from fastprogan.tools.static_check import record_launches

    x, weight, bias = make(2, 16, 24, 4, 5, "channels_last")
    results = []
    for impl in ("triton", "ref"):
        w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
        xi = x.clone().requires_grad_()
        fn = conv2d_bias_act if impl == "triton" else conv2d_bias_act_ref
        kwargs = {"impl": "triton"} if impl == "triton" else {}
        with record_launches() as launches:
            (gx,) = torch.autograd.grad(fn(xi, w, b, **kwargs).sum(), xi, create_graph=True)
        gx.square().sum().backward()
        results.append((gx.detach(), w.grad, b.grad))
        if impl == "triton":
            names = [(v.kernel.rsplit(".", 1)[1], dict(v.constexprs).get("PROLOGUE")) for v in launches]
            assert ("conv2d_act_kernel", 1) in names  # the mask-tensor prologue
            assert not any(n.startswith("lrelu_grad_bias") for n, _ in names)
    for what, a, e in zip(("input gradient", "grad w"), results[0][:2], results[1][:2]):
        check_close(a, e, rtol=1e-4, atol=1e-5, what=what)
    # The penalty reaches the bias only through lrelu's (zero) second derivative: None, not zeros.
    assert results[0][2] is None and not results[1][2].any()


@pytest.mark.parametrize("op", ["conv", "down"])
def test_d_path_gradcheck_and_gradgradcheck_fp64(op):
    g = torch.Generator().manual_seed(3)
    # Small, and fast_mode (random projections): every evaluation re-runs the kernels under the
    # interpreter (the full Jacobians took ~470 launches, ~100 s on 2 loaded cores, for gradcheck alone).
    x = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    fn = OPS[op][0]

    def f(x, weight, bias):
        return fn(x, weight, bias, 0.2, impl="triton")

    assert gradcheck(f, (x, weight, bias), eps=1e-6, atol=1e-5, fast_mode=True)
    assert gradgradcheck(f, (x, weight, bias), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("op", ["conv", "up"])
def test_g_path_gradcheck_and_second_derivative_raises(op):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)

    def f(x, weight, bias):
        return OPS[op][0](x, weight, bias, 0.2, pixel_norm=True, impl="triton")

    assert gradcheck(f, (x, weight, bias), eps=1e-6, atol=1e-5, fast_mode=True)
    (gx,) = torch.autograd.grad(f(x, weight, bias).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once only"):
        gx.sum().backward()


def test_dispatch_rules(monkeypatch):
    x, weight, bias = make(1, 16, 16, 4, 4, "nchw")
    assert cba.conv_path("conv2d_bias_act", x, weight, False, "auto") == "ref"  # never the kernels on CPU
    assert cba.conv_path("conv2d_bias_act", x, weight, False, "triton") == "triton"
    with pytest.raises(RuntimeError, match="C_out <= 128"):
        cba.conv_path("conv2d_bias_act", x, torch.randn(256, 16, 3, 3), False, "triton")
    with pytest.raises(ValueError, match="impl must be one of"):
        conv2d_bias_act(x, weight, bias, impl="fused")
    with pytest.raises(ValueError, match="even height and width"):
        conv2d_downscale_bias_act(torch.randn(1, 16, 5, 4), weight, bias)
    with pytest.raises(ValueError, match="C_in=16"):
        conv2d_bias_act(torch.randn(1, 8, 4, 4), weight, bias)
    # The roofline model (bf16/fp16, H100 constants, the fused GEMM assumed at 60% of cuDNN's
    # throughput): the memory-bound 16-channel 1024x1024 layers gain >= 1.2x forward, the compute-bound
    # 512-channel layers lose; with the backward (shared weight gradient) the gain shrinks.
    fwd_16 = cba.predicted_speedup("conv2d_bias_act", 4, 16, 16, 1024, 1024, torch.bfloat16, False)
    assert fwd_16 >= 1.2
    assert (
        cba.predicted_speedup("conv2d_downscale_bias_act", 4, 16, 32, 1024, 1024, torch.float16, False) >= 1.2
    )
    assert cba.predicted_speedup("conv2d_bias_act", 64, 512, 512, 32, 32, torch.float32, False) < 1.2
    assert (
        1.0 < cba.predicted_speedup("conv2d_bias_act", 4, 16, 16, 1024, 1024, torch.bfloat16, True) < fwd_16
    )


def test_bench_candidates_agree(check_close):
    x, weight, bias = make(1, 16, 24, 4, 6, "channels_last")
    for op in ("conv2d_bias_act", "conv2d_downscale_bias_act", "upscale_conv2d_bias_act"):
        cands = cba.candidates(op, x, weight, bias)
        assert sorted(cands) == ["cudnn", "triton"]
        check_close(cands["triton"](), cands["cudnn"](), rtol=1e-5, atol=1e-5, what=op)
    assert sorted(cba.candidates("conv2d_bias_act", x, torch.randn(256, 16, 3, 3), None)) == ["cudnn"]
    key = cba.shape_key_for(x, weight, True)
    assert key == "c_in=16,c_out=24,dtype=float32,h=4,n=1,pixel_norm=1,w=6"


def test_opcheck_registered_conv_ops():
    """Schema, fake tensors, autograd registration and AOT dispatch of the new custom ops."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 4, 4, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(5, 3, 3, 3, generator=g).requires_grad_()
    w4 = torch.randn(5, 3, 4, 4, generator=g).requires_grad_()
    w4t = torch.randn(3, 5, 4, 4, generator=g).requires_grad_()
    b = torch.randn(5, generator=g).requires_grad_()
    mask = torch.randn(1, 3, 4, 4, generator=g)
    f = torch.ops.fastprogan
    cases = [
        (f.conv2d_act, (x, w, b, 0.2, 1, 1)),
        (f.conv2d_act, (x, w4, b, 0.2, 2, 1)),
        (f.conv2d_masked, (x, mask, w, 0.2, 1, 1)),
        (f.conv2d_act_pixel_norm, (x, w, b, 0.2, 1e-8)),
        (f.upscale_conv2d_act, (x, w4t, b, 0.2, True, 1e-8)),
        (f.conv_transpose2x_masked, (x, mask, w4t, 0.2)),
    ]
    # the first-order D backward from the forward's sign bits (3x3 and stride-2 4x4)
    for weight, stride in ((w, 1), (w4, 2)):
        out, bits = f.conv2d_act(x.detach(), weight.detach(), b.detach(), 0.2, stride, 1)
        gy = torch.randn(out.shape, generator=g).requires_grad_()
        cases += [
            (f.conv_input_grad_bits, (gy, bits, weight, 0.2, stride, 1)),
            (f.conv_weight_grad_bits, (gy, bits, x, 0.2, weight.shape[2], stride, 1)),
        ]
    for op, args in cases:
        torch.library.opcheck(
            op, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration")
        )


@pytest.mark.parametrize("op", [conv2d_bias_act, conv2d_downscale_bias_act, upscale_conv2d_bias_act])
def test_bad_arguments_name_the_argument(op):
    x = torch.randn(2, 4, 6, 6)
    w = torch.randn(5, 4, 3, 3)
    with pytest.raises(ValueError, match=r"weight must be \[C_out, C_in, 3, 3\]"):
        op(x, torch.randn(5, 4, 4, 4), impl="ref")
    with pytest.raises(ValueError, match="x has 4 channels but weight expects C_in=3"):
        op(x, torch.randn(5, 3, 3, 3), impl="ref")
    with pytest.raises(ValueError, match="bias must have shape"):
        op(x, w, torch.randn(4), impl="ref")
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        op(x.to(torch.int32), w, impl="ref")
    with pytest.raises(ValueError, match="x must be 4-D"):
        op(x[0], w, impl="ref")
