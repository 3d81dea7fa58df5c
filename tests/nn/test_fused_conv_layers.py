"""fastprogan.nn layers reach the fused conv kernels through their impl switch (interpreter on CPU)."""

import importlib

import pytest
import torch

from fastprogan.nn import ConvDownscale2d, EqualizedConv2d, UpscaleConv2d
from fastprogan.tools.static_check import record_launches

LAYERS = {
    "conv": (
        lambda c_in, c_out, impl: EqualizedConv2d(c_in, c_out, 3, activation="lrelu", impl=impl),
        "conv2d_act_kernel",
    ),
    "conv_pn": (
        lambda c_in, c_out, impl: EqualizedConv2d(
            c_in, c_out, 3, activation="lrelu", pixel_norm=True, impl=impl
        ),
        "conv2d_act_kernel",
    ),
    "down": (lambda c_in, c_out, impl: ConvDownscale2d(c_in, c_out, impl=impl), "conv2d_act_kernel"),
    "up": (
        lambda c_in, c_out, impl: UpscaleConv2d(c_in, c_out, pixel_norm=True, impl=impl),
        "upscale_conv2d_act_kernel",
    ),
}


@pytest.fixture
def fused_layers_on_cpu(monkeypatch):
    monkeypatch.setattr(
        importlib.import_module("fastprogan.ops.conv2d_bias_act"), "FUSED_LAYERS_UNDER_INTERPRETER", True
    )


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_layer_with_impl_triton_runs_the_fused_kernel_and_matches_ref(kind, check_close, fused_layers_on_cpu):
    make, kernel = LAYERS[kind]
    torch.manual_seed(0)
    layers = {impl: make(16, 24, impl) for impl in ("triton", "ref")}
    layers["ref"].load_state_dict(layers["triton"].state_dict())
    with torch.no_grad():
        layers["triton"].bias.normal_()
        layers["ref"].bias.copy_(layers["triton"].bias)
    x = torch.randn(2, 16, 4, 6).contiguous(memory_format=torch.channels_last)
    out = {}
    for impl, layer in layers.items():
        xi = x.clone().requires_grad_()
        with record_launches() as launches:
            y = layer(xi)
            y.backward(torch.ones_like(y))
        out[impl] = (
            y.detach(),
            xi.grad,
            layer.weight.grad,
            layer.bias.grad,
            {v.kernel.rsplit(".", 1)[1] for v in launches},
        )
    assert kernel in out["triton"][4] and not out["ref"][4]
    for what, a, e in zip(("forward", "grad x", "grad w", "grad b"), out["triton"][:4], out["ref"][:4]):
        check_close(a, e, rtol=1e-4, atol=1e-5, what=f"{kind} {what}")


def test_above_128_channels_impl_triton_keeps_cudnn_conv_and_the_epilogue_kernel(fused_layers_on_cpu):
    layer = EqualizedConv2d(8, 130, 3, activation="lrelu", impl="triton")
    with record_launches() as launches:
        layer(torch.randn(1, 8, 3, 3))
    assert {v.kernel.rsplit(".", 1)[1] for v in launches} == {"bias_lrelu_fwd_kernel"}


def test_auto_on_cpu_runs_no_kernel():
    layer = ConvDownscale2d(8, 16)
    with record_launches() as launches:
        layer(torch.randn(1, 8, 4, 4))
    assert launches == []


def test_triton_layers_on_cpu_keep_the_epilogue_kernel_by_default():
    layer = EqualizedConv2d(8, 16, 3, activation="lrelu", impl="triton")
    with record_launches() as launches:
        layer(torch.randn(1, 8, 3, 3))
    assert {v.kernel.rsplit(".", 1)[1] for v in launches} == {"bias_lrelu_fwd_kernel"}
