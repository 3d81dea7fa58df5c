"""Bad arguments raise ValueError/TypeError naming the argument, before any computation."""

import pytest
import torch

from fastprogan import ops

W = torch.randn(4, 3, 3, 3)


@pytest.mark.parametrize("op", [ops.upscale_conv2d, ops.conv2d_downscale])
def test_resample_conv_bad_inputs(op):
    with pytest.raises(ValueError, match="x must be 4-D"):
        op(torch.randn(3, 8, 8), W)
    with pytest.raises(ValueError, match="x has 5 channels .*C_in=3"):
        op(torch.randn(1, 5, 8, 8), W)
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        op(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), W)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        op(torch.randn(1, 3, 8, 8), [1, 2])
    with pytest.raises(ValueError, match=r"weight must be \[C_out, C_in, 3, 3\]"):
        op(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 5, 5))
    with pytest.raises(ValueError, match=r"bias must have shape \[4\]"):
        op(torch.randn(1, 3, 8, 8), W, torch.randn(3))
    with pytest.raises(ValueError, match="impl must be one of"):
        op(torch.randn(1, 3, 8, 8), W, impl="cuda")
    with pytest.raises(ValueError, match="bias is on meta but x is on cpu"):
        op(torch.randn(1, 3, 8, 8), W, torch.randn(4, device="meta"))


def test_downscale_needs_even_size():
    with pytest.raises(ValueError, match="even height and width"):
        ops.conv2d_downscale(torch.randn(1, 3, 7, 8), W)


def test_bias_act_bad_inputs():
    with pytest.raises(ValueError, match=r"bias must have shape \[6\]"):
        ops.bias_act(torch.randn(2, 6, 4, 4), torch.randn(5))
    with pytest.raises(ValueError, match="x must be 2-D or 4-D"):
        ops.bias_act(torch.randn(2, 6, 4), torch.randn(6))
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        ops.bias_act(torch.ones(2, 6, dtype=torch.int32), None)
    with pytest.raises(ValueError, match="negative_slope"):
        ops.bias_act(torch.randn(2, 6), None, negative_slope=-1.0)
    with pytest.raises(ValueError, match="weight is on meta but x is on cpu|bias is on meta but x is on cpu"):
        ops.bias_act(torch.randn(2, 6), torch.randn(6, device="meta"))
    with pytest.raises(ValueError, match="impl must be one of"):
        ops.bias_act(torch.randn(2, 6), None, impl="fast")


def test_pixel_norm_and_mbstd_bad_inputs():
    with pytest.raises(ValueError, match="eps must be > 0"):
        ops.pixel_norm(torch.randn(2, 3), eps=0.0)
    with pytest.raises(ValueError, match="x must be 4-D"):
        ops.minibatch_stddev(torch.randn(4, 3))
