"""pixel_norm on the Triton path (the bias_act kernel without bias, linear) against pixel_norm_ref."""

import pytest
import torch
from torch.autograd import gradcheck

from fastprogan import ops


@pytest.mark.parametrize("shape", [(4, 512), (3, 17), (3, 513, 2, 2), (3, 16, 5, 7)], ids=str)
def test_fp32_forward_backward_match_reference(shape, check_close):
    x = torch.randn(shape, requires_grad=True)
    y = ops.pixel_norm(x, impl="triton")
    y_ref = ops.pixel_norm_ref(x)
    check_close(y, y_ref, rtol=1e-5, atol=1e-6, what="forward")
    grad = torch.randn(shape)
    check_close(
        torch.autograd.grad(y, x, grad)[0],
        torch.autograd.grad(y_ref, x, grad)[0],
        rtol=1e-5,
        atol=1e-5,
        what="grad",
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_three_way(dtype, check_3way):
    x = torch.randn(8, 512).to(dtype)
    x[0] *= 1e-4  # tiny vectors: the mean of squares must be reduced in fp32 (eps 1e-8)
    check_3way(
        ops.pixel_norm(x, impl="triton"), ops.pixel_norm_ref(x), ops.pixel_norm_ref(x.float()), atol=1e-3
    )


def test_gradcheck_fp64():
    x = torch.randn(2, 4, 2, 1, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x: ops.pixel_norm(x, impl="triton"), (x,))


def test_auto_on_cpu_is_the_reference():
    x = torch.randn(3, 5)
    assert torch.equal(ops.pixel_norm(x), ops.pixel_norm_ref(x))
