"""upscale_conv2d / conv2d_downscale: the fused 4x4-weight convs equal the unfused oracles."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from fastprogan.ops import conv2d_downscale, conv2d_downscale_ref, upscale_conv2d, upscale_conv2d_ref
from fastprogan.ops.conv2d_downscale import CPU_FUSED_MIN_PIXELS as DOWN_MIN_PIXELS
from fastprogan.ops.conv2d_downscale import downscale_path
from fastprogan.ops.resample_weight import four_shift_sum
from fastprogan.ops.upscale_conv2d import CPU_FUSED_MIN_PIXELS as UP_MIN_PIXELS
from fastprogan.ops.upscale_conv2d import upscale_path

OPS = {
    "upscale": (upscale_conv2d, upscale_conv2d_ref, 2.0),
    "downscale": (conv2d_downscale, conv2d_downscale_ref, 0.5),
}


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "noncontig":  # a strided view of a bigger tensor
        big = torch.randn(x.shape[0], x.shape[1] * 2, x.shape[2] + 3, x.shape[3] * 2, dtype=x.dtype)
        view = big[:, ::2, 1 : x.shape[2] + 1, ::2]
        view.copy_(x)
        assert not view.is_contiguous()
        return view
    return x


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "noncontig"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize(("c_in", "c_out", "h", "w"), [(3, 5, 6, 8), (17, 1, 4, 10), (1, 13, 2, 2)])
def test_fused_equals_unfused_fp64(op, layout, with_bias, c_in, c_out, h, w):
    fused, ref, factor = OPS[op]
    if op == "upscale":  # upscaling has no even-size constraint: use odd sizes (5x7, 3x9, 1x1)
        h, w = h - 1, w - 1
    g = torch.Generator().manual_seed(c_in * 100 + c_out)
    x = torch.randn(3, c_in, h, w, dtype=torch.float64, generator=g)
    weight = torch.randn(c_out, c_in, 3, 3, dtype=torch.float64, generator=g)
    bias = torch.randn(c_out, dtype=torch.float64, generator=g) if with_bias else None
    y = fused(_layout(x, layout), weight, bias, impl="fused")
    y_ref = ref(x, weight, bias)
    assert y.shape == (3, c_out, int(h * factor), int(w * factor))
    err = (y - y_ref).abs()
    # borders included: the whole output is compared
    bad = (err > 1e-10).nonzero()
    assert bad.numel() == 0, (
        f"{len(bad)} of {err.numel()} differ, max {err.max().item():.3g}, first at {bad[:3].tolist()}"
    )


@pytest.mark.parametrize("op", sorted(OPS))
def test_ref_is_oracle_and_auto_picks_by_batch_pixels(op):
    fused, ref, _ = OPS[op]
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(fused(x, weight, impl="ref"), ref(x, weight), rtol=0, atol=0)
    # CPU rule: few pixels per weight -> the unfused path (the 4x4 weight build would dominate)
    torch.testing.assert_close(fused(x, weight), ref(x, weight), rtol=0, atol=0)
    assert (
        upscale_path(1, 512, 512, 4, 4, "cpu") == "ref" and upscale_path(8, 64, 64, 32, 32, "cpu") == "fused"
    )
    assert downscale_path(1, 16, 16, "cpu") == "ref" and downscale_path(4, 64, 64, "cpu") == "fused"
    assert downscale_path(1, 8, 8, "cuda") == "fused"
    # the measured CPU thresholds (N*H*W input pixels, docstrings of both ops) are where the rule flips
    up_min, down_min = UP_MIN_PIXELS, DOWN_MIN_PIXELS
    assert upscale_path(up_min // 64, 8, 8, 8, 8, "cpu") == "fused"
    assert upscale_path(1, 8, 8, 1, up_min - 1, "cpu") == "ref"
    assert downscale_path(down_min // 64, 8, 8, "cpu") == "fused"
    assert downscale_path(1, 2, down_min // 2 - 2, "cpu") == "ref"
    assert (up_min, down_min) == (512, 2048)


def test_four_shift_sum_is_the_padded_shift_sum():
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    p = torch.nn.functional.pad(w, [1, 1, 1, 1])  # [.., 5, 5]
    expect = p[..., 1:, 1:] + p[..., :-1, 1:] + p[..., 1:, :-1] + p[..., :-1, :-1]
    torch.testing.assert_close(four_shift_sum(w), expect, rtol=0, atol=1e-14)
    torch.testing.assert_close(four_shift_sum(w, 0.25), expect * 0.25, rtol=0, atol=1e-14)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("impl", ["ref", "fused"])
def test_gradcheck_and_gradgradcheck(op, impl):
    fused, _, _ = OPS[op]
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)

    def f(x, weight, bias):
        return fused(x, weight, bias, impl=impl)

    assert gradcheck(f, (x, weight, bias))
    assert gradgradcheck(f, (x, weight, bias))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op", sorted(OPS))
def test_fp32_parameters_with_half_activations(op, dtype):
    fused, ref, _ = OPS[op]
    x = torch.randn(2, 8, 8, 8)
    weight = torch.randn(4, 8, 3, 3) / 8
    y = fused(x.to(dtype), weight)  # fp32 weight, half activations: cast per call
    assert y.dtype == dtype
    y32 = ref(x, weight)
    # 3-way rule: our error is within 2x plain torch's error in that dtype (+ small atol)
    plain = ref(x.to(dtype), weight.to(dtype)).float()
    ours_err = (y.float() - y32).abs().max().item()
    plain_err = (plain - y32).abs().max().item()
    assert ours_err <= 2 * plain_err + 1e-3, (ours_err, plain_err)
