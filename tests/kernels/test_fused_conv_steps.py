"""A WGAN-GP D step and a G step with the fused conv kernels forced (impl="triton", interpreter on CPU)
against the same steps on the reference ops: the penalty, the loss and every parameter gradient match.

D: fromRGB (1x1 conv + bias_act) -> conv2d_bias_act -> conv2d_downscale_bias_act -> minibatch stddev
-> conv2d_bias_act -> dense -> dense; the penalty's create_graph gradient w.r.t. the input and the
backward through it run the fused ops' double backward. G: upscale_conv2d_bias_act (conv0_up) then
conv2d_bias_act, both with pixel norm.
"""

import torch
import torch.nn.functional as F

from fastprogan import ops


def _params(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(s, generator=g) * scale).requires_grad_() for k, (s, scale) in shapes.items()}


D_SHAPES = {
    "rgb_w": ((8, 3, 1, 1), 0.3),
    "rgb_b": ((8,), 0.3),
    "c1_w": ((16, 8, 3, 3), 0.3),
    "c1_b": ((16,), 0.3),
    "down_w": ((24, 16, 3, 3), 0.2),
    "down_b": ((24,), 0.3),
    "c2_w": ((16, 25, 3, 3), 0.2),
    "c2_b": ((16,), 0.3),
    "fc_w": ((16, 16 * 4 * 4), 0.05),
    "fc_b": ((16,), 0.3),
    "out_w": ((1, 16), 0.3),
    "out_b": ((1,), 0.3),
}


def discriminator(x, P, impl):
    x = x.contiguous(memory_format=torch.channels_last)
    h = ops.bias_act(F.conv2d(x, P["rgb_w"]), P["rgb_b"], impl="ref")
    h = ops.conv2d_bias_act(h, P["c1_w"], P["c1_b"], impl=impl)  # [N, 16, 8, 8]
    h = ops.conv2d_downscale_bias_act(h, P["down_w"], P["down_b"], impl=impl)  # [N, 24, 4, 4]
    h = ops.minibatch_stddev(h, 2, impl="ref")  # [N, 25, 4, 4]
    h = ops.conv2d_bias_act(h, P["c2_w"], P["c2_b"], impl=impl)
    h = ops.bias_act(F.linear(h.flatten(1), P["fc_w"]), P["fc_b"], impl="ref")
    return ops.bias_act(F.linear(h, P["out_w"]), P["out_b"], negative_slope=1.0, impl="ref")


def d_step(impl):
    P = _params(D_SHAPES, 0)
    g = torch.Generator().manual_seed(1)
    # batch 2 (one minibatch-stddev group), 8x8: few interpreter programs per launch
    real, fake = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    alpha = torch.rand(2, 1, 1, 1, generator=g)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_()
    (grad,) = torch.autograd.grad(discriminator(x_hat, P, impl).sum(), x_hat, create_graph=True)
    penalty = (grad.flatten(1).norm(dim=1) - 1).square().mean()
    d_real, d_fake = discriminator(real, P, impl), discriminator(fake, P, impl)
    loss = d_fake.mean() - d_real.mean() + 10.0 * penalty + 1e-3 * d_real.square().mean()
    loss.backward()
    return penalty.detach(), loss.detach(), {k: v.grad for k, v in P.items()}


def test_wgan_gp_d_step_with_fused_convs_matches_reference(check_close):
    pen, loss, grads = d_step("triton")
    pen_ref, loss_ref, grads_ref = d_step("ref")
    check_close(pen, pen_ref, rtol=1e-5, atol=1e-6, what="penalty")
    check_close(loss, loss_ref, rtol=1e-5, atol=1e-6, what="loss")
    assert pen_ref > 0.01  # the penalty is not trivially zero: its gradient path is exercised
    for k in grads_ref:
        check_close(grads[k], grads_ref[k], rtol=1e-4, atol=1e-5, what=f"grad {k}")


G_SHAPES = {
    "c0_w": ((32, 16, 3, 3), 0.3),
    "c0_b": ((32,), 0.3),
    "c1_w": ((24, 32, 3, 3), 0.2),
    "c1_b": ((24,), 0.3),
}


def g_step(impl):
    P = _params(G_SHAPES, 2)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 16, 3, 3, generator=g)
    target = torch.randn(3, 24, 6, 6, generator=g)
    h = ops.upscale_conv2d_bias_act(x, P["c0_w"], P["c0_b"], pixel_norm=True, impl=impl)  # [3, 32, 6, 6]
    y = ops.conv2d_bias_act(h, P["c1_w"], P["c1_b"], pixel_norm=True, impl=impl)
    loss = -(y * target).mean()
    loss.backward()
    return loss.detach(), {k: v.grad for k, v in P.items()}


def test_g_step_with_fused_convs_matches_reference(check_close):
    loss, grads = g_step("triton")
    loss_ref, grads_ref = g_step("ref")
    check_close(loss, loss_ref, rtol=1e-5, atol=1e-7, what="loss")
    for k in grads_ref:
        check_close(grads[k], grads_ref[k], rtol=1e-4, atol=1e-6, what=f"grad {k}")
