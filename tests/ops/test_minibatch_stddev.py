"""minibatch_stddev on the Triton path (interpreter on CPU) against minibatch_stddev_ref."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from fastprogan import ops


def make_input(shape, layout, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    if layout == "view":
        n, c, h, w = shape
        return (torch.randn(n, c + 2, h, w, generator=g) * 2 + 1).to(dtype)[:, 1 : c + 1]  # channel slice
    x = (torch.randn(shape, generator=g) * 2 + 1).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


# (shape, group_size): ProGAN's 4x4 D input (512 channels; batch 8 of the paper's 4-per-group
# layout), odd sizes, N < group size (G = N), G = 1 (statistic = sqrt(eps)), a batch not a power of 2.
CASES = [
    ((8, 512, 4, 4), 4),
    ((6, 17, 5, 7), 3),
    ((3, 2, 5, 7), 4),
    ((5, 3, 4, 4), 1),
    ((12, 16, 4, 4), 4),
]


@pytest.mark.parametrize("shape, group_size", CASES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "view"])
def test_fp32_forward_backward_match_reference(shape, group_size, layout, check_close):
    x = make_input(shape, layout).requires_grad_()
    y = ops.minibatch_stddev(x, group_size, impl="triton")
    y_ref = ops.minibatch_stddev_ref(x, group_size)
    check_close(y, y_ref, rtol=1e-5, atol=1e-6, what="forward")
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn(y.shape)
    (gx,) = torch.autograd.grad(y, x, grad)
    (gx_ref,) = torch.autograd.grad(y_ref, x, grad)
    check_close(gx, gx_ref, rtol=1e-5, atol=1e-6, what="grad x")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_half_precision_three_way(dtype, layout, check_3way):
    x = make_input((8, 64, 4, 4), layout, dtype).requires_grad_()
    x32 = x.detach().float().requires_grad_()
    grad = torch.randn(8, 65, 4, 4).to(dtype)
    y = ops.minibatch_stddev(x, 4, impl="triton")
    y_lo = ops.minibatch_stddev_ref(x, 4)
    y32 = ops.minibatch_stddev_ref(x32, 4)
    assert y.dtype == dtype
    check_3way(y, y_lo, y32, atol=1e-3, what="forward")
    (gx,) = torch.autograd.grad(y, x, grad)
    (gx_lo,) = torch.autograd.grad(y_lo, x, grad)
    (gx32,) = torch.autograd.grad(y32, x32, grad.float())
    check_3way(gx, gx_lo, gx32, atol=1e-3, what="grad x")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gradcheck_and_gradgradcheck_fp64(layout):
    x = make_input((4, 2, 2, 2), layout, torch.float64).requires_grad_()
    f = lambda x: ops.minibatch_stddev(x, 2, impl="triton")
    assert gradcheck(f, (x,))
    assert gradgradcheck(f, (x,))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_opcheck(layout):
    x = make_input((6, 5, 2, 3), layout).requires_grad_()
    torch.library.opcheck(torch.ops.fastprogan.minibatch_stddev.default, (x, 3))


def test_bad_arguments_fail_before_launch():
    with pytest.raises(ValueError, match="not divisible"):
        ops.minibatch_stddev(torch.randn(6, 3, 4, 4), 4, impl="triton")
    with pytest.raises(ValueError, match="x must be 4-D"):
        ops.minibatch_stddev(torch.randn(6, 3), 2, impl="triton")
    with pytest.raises(ValueError, match="group_size"):
        ops.minibatch_stddev(torch.randn(6, 3, 4, 4), 0, impl="triton")


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "view"])
def test_first_order_backward_is_one_kernel_and_matches_the_differentiable_formula(layout, check_close):
    from fastprogan.tools.dispatch import count_ops

    x = make_input((8, 6, 3, 5), layout).requires_grad_()
    y = ops.minibatch_stddev(x, 4, impl="triton")
    grad = torch.randn(y.shape)
    out = {}
    counter = count_ops(lambda: out.update(fused=torch.autograd.grad(y, x, grad, retain_graph=True)[0]))
    # one launch (plus at most a layout copy of a view's saved x), none of the formula's 16 torch ops
    assert counter.counts["fastprogan.minibatch_stddev_backward"] == 1, counter.counts
    assert counter.counts["aten.mean"] == 0 and counter.counts["aten.sqrt"] == 0, counter.counts
    # create_graph=True takes the differentiable torch formula: the same numbers to fp32 rounding
    (formula,) = torch.autograd.grad(y, x, grad, create_graph=True)
    assert formula.requires_grad
    check_close(out["fused"], formula, rtol=1e-6, atol=1e-7, what="kernel vs formula")
    # an expanded (stride-0) incoming gradient, as y.sum() gives
    (gx,) = torch.autograd.grad(y.sum(), x)
    (gx_ref,) = torch.autograd.grad(ops.minibatch_stddev_ref(x, 4).sum(), x)
    check_close(gx, gx_ref, rtol=1e-5, atol=1e-6, what="expanded grad")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_backward_opcheck(layout):
    x = make_input((6, 5, 2, 3), layout)
    grad = make_input((6, 6, 2, 3), layout, seed=1)
    torch.library.opcheck(torch.ops.fastprogan.minibatch_stddev_backward.default, (x, grad, 3))
