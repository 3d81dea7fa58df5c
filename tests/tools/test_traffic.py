"""The traffic counter, the fused G block's traffic budgets and the resampling rule's byte formulas."""

import pytest
import torch

from fastprogan import ops
from fastprogan.ops.upscale_conv2d import upscale_path, upscale_traffic
from fastprogan.tools import traffic as T


def test_counter_counts_reads_and_writes_and_skips_views():
    x = torch.empty(1000, device="meta")
    y = torch.empty(1000, device="meta")
    counter = T.count(lambda: (x + y).reshape(10, 100).t())
    assert [name for name, _, _ in counter.rows] == ["aten.add.Tensor"]
    assert counter.total == 3 * 4000
    b = torch.empty(10, device="meta")  # a broadcast operand is read once, not once per element
    assert T.count(lambda: x.reshape(100, 10) + b).total == 4000 + 40 + 4000


def test_custom_op_is_one_op_and_its_scratch_traffic_is_added():
    x = torch.empty(4, 16, 8, 8, device="meta", requires_grad=True)
    b = torch.empty(16, device="meta", requires_grad=True)
    fwd = T.count(lambda: ops.bias_act(x, b, 0.2, pixel_norm=True, impl="triton"))
    assert [name for name, _, _ in fwd.rows] == ["fastprogan.bias_act_pixel_norm.default"]
    assert fwd.total == 4 * (2 * x.numel() + 16 + 4 * 64)  # x, bias read; y, rstd written
    y = ops.bias_act(x, b, 0.2, pixel_norm=True, impl="triton")
    bwd = T.count(lambda: y.backward(torch.empty_like(y)))
    (row,) = [r for r in bwd.rows if "pixel_norm_backward" in r[0]]
    partial_rows = 4 * 1  # 64 pixels fit one 256-pixel tile per image
    assert row[1] == 4 * (2 * x.numel() + 16 + 4 * 64) + 2 * 4 * partial_rows * 16


@pytest.mark.parametrize("resolution", T.RESOLUTIONS)
def test_g_block_fused_traffic_budget(resolution):
    make = lambda: T.g_block_inputs(resolution, torch.float32)
    ref_fwd, ref_all = T.fwd_and_fwd_bwd(T.g_block_ref, make)
    fused_fwd, fused_all = T.fwd_and_fwd_bwd(T.g_block_fused, make)
    budget = 0.35 if resolution >= 128 else 0.6
    assert fused_all <= budget * ref_all, (resolution, fused_all / ref_all)
    assert fused_fwd < ref_fwd


# WGAN-GP D step budgets (fp32, fused / eager reference). The target is 0.5x; it is met from 64x64 up
# (measured 0.49 at 64, 0.48 at 128..1024). Below, the 512x512 conv weights and their 4x4 construction,
# the same on both paths, dominate: measured 0.73 (8), 0.62 (16), 0.59 (32); those are regression guards.
D_STEP_BUDGET = {8: 0.75, 16: 0.63, 32: 0.61}


@pytest.mark.parametrize("resolution", T.RESOLUTIONS)
def test_d_step_with_penalty_traffic_budget(resolution):
    ratio = T.d_step(T.d_block_fused, resolution, torch.float32) / T.d_step(
        T.d_block_ref, resolution, torch.float32
    )
    assert ratio <= D_STEP_BUDGET.get(resolution, 0.5), (resolution, ratio)


def test_d_step_bias_gradients_are_fused_and_no_zero_pass():
    # The fused D step reduces no activation-sized tensor for the bias gradients (lrelu_grad_bias does
    # it inside) and materialises no zero gradients for the x_hat forward graph.
    names = [name for name, _, _ in T.d_step_counter(T.d_block_fused, 64, torch.float32).rows]
    assert "aten.zeros.default" not in names and "aten.zeros_like.default" not in names
    assert names.count("fastprogan.lrelu_grad_bias.default") == 6  # real, fake, x_hat: two layers each
    assert names.count("fastprogan.bias_act.default") == 6  # forward only: no backward on zeros


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("path", ["fused", "ref"])
@pytest.mark.parametrize("shape", [(2, 8, 16, 4), (3, 24, 8, 6), (128, 512, 512, 4)], ids=str)
def test_upscale_byte_formulas_match_the_counter(path, backward, shape):
    n, c_in, c_out, h = shape
    x = torch.empty(n, c_in, h, h, device="meta", requires_grad=True)
    w = torch.empty(c_out, c_in, 3, 3, device="meta", requires_grad=True)
    gy = torch.empty(n, c_out, 2 * h, 2 * h, device="meta")

    def run():
        y = ops.upscale_conv2d(x, w, impl=path)
        if backward:
            y.backward(gy)

    counted = T.count(run).total
    assert upscale_traffic(path, n, c_in, c_out, h, h, 4, backward) == pytest.approx(counted, rel=0.02)


def test_upscale_rule():
    assert upscale_path(1, 512, 512, 4, 4, "cpu") == "ref"  # CPU: few pixels per weight (ops docstring)
    for r in T.RESOLUTIONS:  # training batches on a GPU: fused everywhere
        assert (
            upscale_path(T.BATCH[r], T.nf(r // 2), T.nf(r), r // 2, r // 2, "cuda", torch.bfloat16) == "fused"
        )
    # generation at batch 1, 4x4 -> 8x8 with 512 channels: building 4x4 weights costs more than it saves
    assert upscale_path(1, 512, 512, 4, 4, "cuda", torch.bfloat16, backward=False) == "ref"
    assert upscale_path(1, 32, 16, 512, 512, "cuda", torch.bfloat16, backward=False) == "fused"


def test_cli_prints_tables(capsys):
    assert T.main([]) == 0
    out = capsys.readouterr().out
    assert "G block" in out and "D step" in out and "| 1024 |" in out
    assert T.main(["--top", "16"]) == 0
    out = capsys.readouterr().out
    assert "fused" in out and "fastprogan.lrelu_grad_bias.default" in out


def test_fused_conv_layers_traffic():
    """Per layer at 256-1024 (paper channels, preset batch), fused conv kernels / cuDNN conv + Triton
    epilogue, forward + backward. Measured, fp32 / bf16: D conv 0.61-0.62 / 0.62-0.64, D conv1_down
    0.70-0.71 / 0.71-0.72 (the D backward reads g and the forward's sign bits, no masked gradient, weight
    gradient in Triton), G conv 0.90, G conv0_up 0.88-0.89 (the pixel-norm gradient needs the full
    output: unchanged). The issue's 0.55x target is NOT met: it needs one pass over g for both gradients
    (tried: the nine tap accumulators spill on every config). Regression guards."""
    for dtype in (torch.float32, torch.bfloat16):
        rows = T.layer_rows(dtype)
        assert len(rows) == 4 * len(T.LAYER_RESOLUTIONS)
        for r in rows:
            fwd, both = r["fwd_triton"] / r["fwd_cudnn"], r["fwdbwd_triton"] / r["fwdbwd_cudnn"]
            kind = r["layer"].split(" (")[0]
            assert fwd <= {"D conv1_down": 0.62, "G conv0_up": 0.46}.get(kind, 0.54), r
            # G conv 0.92: merged with main, the cuDNN path's pixel-norm epilogue writes no zeros for rstd
            limit = {"D conv": 0.65, "D conv1_down": 0.73, "G conv": 0.92, "G conv0_up": 0.90}[kind]
            assert both <= limit, r


def test_fused_conv_d_backward_writes_no_masked_gradient():
    """The D layers' first-order backward on the fused kernels: no lrelu_grad(_bias) pass, no cuDNN
    convolution_backward; the sign-bit ops read g once each; the WGAN-GP D step <= 0.75x today's path
    (measured 0.72-0.73, fp32 and bf16)."""
    x, w, b = T._leaf(2, 16, 32, 32), T._leaf(16, 16, 3, 3), T._leaf(16)
    for fn, kw in ((T.ops.conv2d_bias_act, {}), (T.ops.conv2d_downscale_bias_act, {})):
        y = None

        def run(fn=fn, kw=kw):
            nonlocal y
            y = fn(x, w, b, 0.2, impl="triton", **kw)
            y.backward(torch.empty(y.shape, device="meta"))

        names = [name for name, _, _ in T.count(run).rows]
        assert "fastprogan.conv_weight_grad_bits.default" in names, names
        assert "fastprogan.conv_input_grad_bits.default" in names, names
        assert not any("lrelu_grad" in n or "convolution_backward" in n for n in names), names
    for res in T.LAYER_RESOLUTIONS:
        ratio = T.d_step(T.d_block_fused_conv, res, torch.float32) / T.d_step(
            T.d_block_fused, res, torch.float32
        )
        assert ratio <= 0.75, (res, ratio)
