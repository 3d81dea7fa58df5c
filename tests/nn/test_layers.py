"""fastprogan.nn: equalized-LR scaling, layouts, autocast, and agreement with the plain-torch oracle."""

import math

import pytest
import torch
import torch.nn.functional as F

from fastprogan import nn as fnn


def test_equalized_conv_init_and_runtime_scale():
    torch.manual_seed(0)
    layer = fnn.EqualizedConv2d(64, 32, 3, activation="lrelu")
    assert layer.weight_scale == pytest.approx(math.sqrt(2) / math.sqrt(64 * 9))
    assert torch.all(layer.bias == 0)
    assert abs(layer.weight.std().item() - 1.0) < 0.02  # stored N(0, 1)
    x = torch.randn(2, 64, 5, 7)
    expect = F.leaky_relu(F.conv2d(x, layer.weight * layer.weight_scale, layer.bias, padding=1), 0.2)
    torch.testing.assert_close(layer(x), expect)


def test_resample_layers_use_3x3_fan_in_and_match_unfused():
    up = fnn.UpscaleConv2d(8, 4, pixel_norm=True)
    down = fnn.ConvDownscale2d(8, 4)
    assert up.weight_scale == pytest.approx(math.sqrt(2) / math.sqrt(8 * 9))
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    up.double(), down.double()
    w = up.weight * up.weight_scale
    z = F.leaky_relu(F.conv2d(F.interpolate(x, scale_factor=2), w, up.bias, padding=1), 0.2)
    torch.testing.assert_close(up(x), z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8))
    w = down.weight * down.weight_scale
    z = F.leaky_relu(F.avg_pool2d(F.conv2d(x, w, down.bias, padding=1), 2), 0.2)
    torch.testing.assert_close(down(x), z)


def test_torgb_fromrgb_dense_gains():
    assert fnn.ToRGB(16, 3).weight_scale == pytest.approx(1 / 4)
    assert fnn.FromRGB(3, 16).weight_scale == pytest.approx(math.sqrt(2) / math.sqrt(3))
    lin = fnn.EqualizedLinear(10, 4, gain=1.0)
    assert lin.weight_scale == pytest.approx(1 / math.sqrt(10))
    x = torch.randn(5, 10)
    torch.testing.assert_close(lin(x), x @ (lin.weight / math.sqrt(10)).t())


@pytest.mark.parametrize(
    "make",
    [
        lambda: fnn.EqualizedConv2d(6, 5, 3, activation="lrelu", pixel_norm=True),
        lambda: fnn.UpscaleConv2d(6, 5, pixel_norm=True),
        lambda: fnn.ConvDownscale2d(6, 5),
        lambda: fnn.FromRGB(6, 5),
    ],
)
def test_channels_last_equals_contiguous(make):
    layer = make()
    x = torch.randn(3, 6, 8, 8)
    y = layer(x)
    y_cl = layer(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_and_half_inputs_keep_fp32_params(dtype):
    layer = fnn.UpscaleConv2d(8, 8, pixel_norm=True)
    x = torch.randn(2, 8, 4, 4)
    with torch.autocast("cpu", dtype=dtype):
        y = layer(x)
    assert y.dtype == dtype and layer.weight.dtype == torch.float32
    y_half = layer(x.to(dtype))  # half activations without autocast: params cast per call
    assert y_half.dtype == dtype
    ref = layer(x)
    assert (y.float() - ref).abs().max() < 0.1 and (y_half.float() - ref).abs().max() < 0.1


def test_impl_ref_equals_auto_on_cpu():
    torch.manual_seed(0)
    a = fnn.UpscaleConv2d(4, 4, pixel_norm=True).double()
    b = fnn.UpscaleConv2d(4, 4, pixel_norm=True, impl="ref").double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=1e-12)


def test_bad_layer_config():
    with pytest.raises(ValueError, match="activation must be one of"):
        fnn.EqualizedConv2d(3, 3, 3, activation="relu")
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        fnn.EqualizedConv2d(3, 3, 2)


def test_minibatch_stddev_and_pixel_norm_modules():
    x = torch.randn(8, 3, 4, 4)
    assert fnn.MinibatchStdDev(4)(x).shape == (8, 4, 4, 4)
    torch.testing.assert_close(fnn.PixelNorm()(x).square().mean(1), torch.ones(8, 4, 4), rtol=1e-4, atol=1e-4)
    ba = fnn.BiasAct(3, activation="linear")
    torch.testing.assert_close(ba(x), x)
