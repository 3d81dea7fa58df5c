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


# ---- fp16 overflow of x + b: the kernel agrees with the reference (docs/kernels.md, "Overflow") ----


@pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning"
)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("slope", [0.2, 1.0])
def test_fp16_overflow_of_x_plus_bias_is_nan_like_the_reference(layout, slope, check_3way):
    # x + b beyond 65504 overflows to +-inf in the reference's fp16 add, and pixel norm turns the
    # pixel into NaN (inf * rsqrt(inf)); the kernel must return NaN there too, so the NaN guard sees it.
    x = torch.randn(2, 8, 3, 5).to(torch.float16)
    x[0, 3, 1, 2] = 65000.0  # + 1000 -> 66000 > 65504: +inf
    x[1, 0, 2, 4] = -65000.0  # - 1000 -> -inf (and lrelu(-inf) = -inf)
    x[1, 5, 0, 0] = 64000.0  # + 1000 = 65000: finite, the pixel stays finite
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    bias = torch.zeros(8)
    bias[3], bias[0], bias[5] = 1000.0, -1000.0, 1000.0
    y = ops.bias_act(x, bias, slope, pixel_norm=True, impl="triton")
    y_ref = ops.bias_act_ref(x, bias, slope, pixel_norm=True)
    assert torch.equal(torch.isnan(y), torch.isnan(y_ref))
    assert torch.isnan(y_ref).sum() == 2 and y_ref[0, 3, 1, 2].isnan() and y_ref[1, 0, 2, 4].isnan()
    # The rest of an overflowed pixel is finite * rsqrt(inf) = 0 on both paths.
    nan_pixels = torch.isnan(y_ref).any(dim=1)  # [N, H, W]
    hit = nan_pixels[:, None].expand_as(y) & ~torch.isnan(y_ref)
    assert (y[hit] == 0).all() and (y_ref[hit] == 0).all()
    keep = ~nan_pixels[:, None].expand_as(y)
    wide = ops.bias_act_ref(x.double(), bias.double(), slope, pixel_norm=True)
    check_3way(y[keep], y_ref[keep], wide[keep], atol=1e-3)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_fp16_overflow_without_pixel_norm_is_inf_like_the_reference():
    x = torch.tensor([[65000.0, -65000.0, 1.0]]).to(torch.float16)  # [1, 3]
    bias = torch.tensor([1000.0, -1000.0, 0.0])
    y = ops.bias_act(x, bias, 0.2, impl="triton")
    y_ref = ops.bias_act_ref(x, bias, 0.2)
    assert y_ref[0, :2].isinf().all()
    assert torch.equal(y, y_ref)


# ---- the 2**31-element guard: shape checks only, on meta tensors (nothing is allocated) ----


def _kernels():
    from fastprogan.ops._kernels import load_kernels

    return load_kernels("bias_act")


@pytest.mark.parametrize(
    "shape",
    [(1, 512, 2048, 2048), (2, 2**11, 2**10, 2**10), (2**22, 512)],
    ids=["nchw-one-image", "two-images", "2d-dense"],
)
def test_pixel_norm_kernels_refuse_images_of_2_31_elements(shape):
    k = _kernels()
    x = torch.empty(shape, device="meta", dtype=torch.float16)  # C x H x W (or N x C) = 2**31
    with pytest.raises(ValueError, match=r"bias_act_pixel_norm: one image of .* reaches 2\*\*31"):
        k.bias_act_pixel_norm_forward(x, None, 0.2, 1e-8)
    rstd = torch.empty(k.rstd_shape(x), device="meta")
    with pytest.raises(ValueError, match=r"bias_act_pixel_norm_backward: one image of .* reaches 2\*\*31"):
        k.bias_act_pixel_norm_backward(torch.empty_like(x), x, None, rstd, 0.2)
    cl = (
        torch.empty(shape, device="meta").contiguous(memory_format=torch.channels_last)
        if len(shape) == 4
        else x
    )
    with pytest.raises(ValueError, match="2\\*\\*31"):
        k.bias_act_pixel_norm_forward(cl, None, 0.2, 1e-8)


def test_extent_guard_bounds():
    k = _kernels()
    k.check_image_extent("op", 65535, 2**16, 2**15 - 1)  # C * S = 2**31 - 2**16: fits
    k.check_image_extent("op", 1, 1, 2**31 - 1)
    with pytest.raises(ValueError, match="op: one image of 1 x 2147483648"):
        k.check_image_extent("op", 1, 1, 2**31)
    with pytest.raises(ValueError, match="op: 65536 images exceed the 65535 grid rows"):
        k.check_image_extent("op", 65536, 512, 16)
    # The batch limit reaches the launcher before any allocation too.
    with pytest.raises(ValueError, match="65536 images"):
        k.bias_act_pixel_norm_forward(torch.empty(65536, 8, 2, 2, device="meta"), None, 0.2, 1e-8)
