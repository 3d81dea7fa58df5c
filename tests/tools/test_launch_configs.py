"""Every kernel launch takes its config from the tables the static check compiles.

``record_launches`` hooks Triton's launch entry point, so a launch made by any helper (or none) is
recorded; ``off_table`` compares each against ``all_configs()``. The ops run here under the
interpreter cover every launcher in fp32 and the half dtypes; a launch patched to another config is
reported.
"""

import pytest
import torch

from fastprogan import ops
from fastprogan.ops._kernels import load_kernels
from fastprogan.tools.static_check import _kernel_id, all_configs, off_table, record_launches


def _exercise_epilogue_ops(dtype: torch.dtype) -> None:
    """Run every bias_act / pixel_norm / minibatch_stddev launcher once (forward and backward)."""
    g = torch.Generator().manual_seed(0)
    for shape, channels_last in (
        ((3, 17, 5, 7), False),
        ((3, 17, 5, 7), True),
        ((2, 513, 3, 3), False),
        ((5, 3), False),
    ):
        x = torch.randn(shape, generator=g).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for pn in (False, True):
            xi = x.clone().requires_grad_()
            b = torch.randn(shape[1], generator=g).requires_grad_()
            ops.bias_act(xi, b, 0.2, pn, impl="triton").sum().backward()
        xi = x.clone().requires_grad_()  # no bias gradient: the plain lrelu_grad kernel
        ops.bias_act(xi, None, 0.2, impl="triton").sum().backward()
        ops.pixel_norm(x, impl="triton")
        if x.ndim == 4:  # forward and the first-order backward kernel
            ops.minibatch_stddev(x[:2].clone().requires_grad_(), 2, impl="triton").sum().backward()


def _exercise_conv_ops(dtype: torch.dtype) -> None:
    """Every conv2d_act launch variant: D forward + full backward (sign-bit prologues, the weight-gradient
    kernel), the penalty's input-gradient-only pass (masked prologue), G forward + backward (pixel norm),
    the stride-2 downscale (forward, both backwards through the parity kernel); 3 -> 24 and
    16 -> 128 channels (two BLOCK_N buckets), both layouts."""
    from fastprogan.ops.conv2d_bias_act import (
        conv2d_bias_act,
        conv2d_downscale_bias_act,
        upscale_conv2d_bias_act,
    )

    g = torch.Generator().manual_seed(1)
    for c_in, c_out, channels_last in ((3, 24, True), (16, 128, False)):
        x = torch.randn(1, c_in, 4, 4, generator=g).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn(c_out, c_in, 3, 3, generator=g).requires_grad_()
        b = torch.randn(c_out, generator=g).requires_grad_()
        for pn in (False, True):
            xi = x.clone().requires_grad_()
            conv2d_bias_act(xi, w, b, 0.2, pn, impl="triton").sum().backward()
        xi = x.clone().requires_grad_()
        # input gradient only (parameters without grad): the masked-prologue variant
        torch.autograd.grad(conv2d_bias_act(xi, w.detach(), b.detach(), impl="triton").sum(), xi)
        xi = x.clone().requires_grad_()  # first order from the sign bits (parity + weight-gradient kernels)
        conv2d_downscale_bias_act(xi, w, b, impl="triton").sum().backward()
        xi = x.clone().requires_grad_()  # input gradient only: the parity kernel's mask prologue
        torch.autograd.grad(conv2d_downscale_bias_act(xi, w.detach(), b.detach(), impl="triton").sum(), xi)
        for pn in (False, True):  # upscale forward and its input gradient (the stride-2 4x4 conv)
            xi = x.clone().requires_grad_()
            upscale_conv2d_bias_act(xi, w, b, 0.2, pn, impl="triton").sum().backward()


def _seen_kernels(launches) -> set[str]:
    return {launch.kernel for launch in launches}


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"]
)
def test_every_launch_uses_a_checked_config(dtype):
    with record_launches() as launches:
        _exercise_epilogue_ops(dtype)
        _exercise_conv_ops(dtype)
    assert launches, "nothing was recorded: the launch hook is not in the path"
    assert off_table(launches) == []
    table_kernels = {_kernel_id(c["kernel"]) for c in all_configs()}
    assert table_kernels <= _seen_kernels(launches)  # every kernel of the tables was exercised
    conv = [launch for launch in launches if launch.kernel.endswith(".conv2d_act_kernel")]
    variants = {
        (dict(v.constexprs)["KSIZE"], dict(v.constexprs)["PROLOGUE"], dict(v.constexprs)["EPILOGUE"])
        for v in conv
    }
    # (kernel size, prologue: 0 none / 1 mask / 2 sign bits, epilogue: 0 none / 1 lrelu / 2 pixel norm)
    assert variants == {(3, 0, 1), (3, 0, 2), (3, 1, 0), (3, 2, 0), (3, 0, 0), (4, 0, 1), (4, 0, 0)}
    up = {
        (dict(v.constexprs)["PROLOGUE"], dict(v.constexprs)["EPILOGUE"])
        for v in launches
        if v.kernel.endswith("upscale_conv2d_act_kernel")
    }
    assert up == {(0, 1), (0, 2), (2, 0), (1, 0)}  # G's conv0_up; the downscale's input gradients
    wgrad = {dict(v.constexprs)["KSIZE"] for v in launches if v.kernel.endswith("conv2d_weight_grad_kernel")}
    assert wgrad == {3, 4}


def test_a_launch_with_another_config_is_reported(monkeypatch):
    table = all_configs()  # what the static check compiles
    kernels = load_kernels("bias_act")
    monkeypatch.setattr(kernels, "FLAT_WARPS", 64)  # the flat kernels now launch 2,048-thread blocks
    with record_launches() as launches:
        ops.bias_act(torch.randn(2, 3, 4, 4), torch.randn(3), impl="triton")
    bad = off_table(launches, table)
    assert len(bad) == 1 and bad[0].kernel.endswith("bias_lrelu_fwd_kernel") and bad[0].num_warps == 64


def test_a_launch_with_an_unchecked_tile_or_dtype_is_reported(monkeypatch):
    table = all_configs()
    kernels = load_kernels("bias_act")
    monkeypatch.setattr(kernels, "PIXEL_NORM_TILES", (kernels.TileConfig(32, 64, 8),))
    with record_launches() as launches:
        ops.bias_act(torch.randn(2, 17, 4, 4), torch.randn(17), 0.2, True, impl="triton")
        ops.bias_act(torch.randn(2, 3, 4, 4, dtype=torch.float64), None, impl="triton")  # fp64: not for GPUs
    bad = off_table(launches, table)
    assert [b.kernel.rsplit(".", 1)[1] for b in bad] == [
        "bias_act_pixel_norm_fwd_kernel",
        "bias_lrelu_fwd_kernel",
    ]
