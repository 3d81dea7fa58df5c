"""The resolution-native WGAN-GP D loss equals the official full-resolution computation (fp64)."""

import pytest
import torch
import torch.nn.functional as F

from fastprogan.models import Discriminator
from fastprogan.training.losses import (
    lsgan_d_loss,
    lsgan_g_loss,
    wgan_g_loss,
    wgan_g_loss_mean,
    wgan_gp_d_loss,
)


def full_resolution_d_loss(D, reals, fakes, u, lod, k, *, gp_lambda=10.0, gp_target=1.0, drift=0.001):
    """The official way: images nearest-upscaled by k to full resolution, D_full(x) = D(avg_pool(x, k))."""

    def D_full(x):
        return D(F.avg_pool2d(x, k), lod).squeeze(1)

    reals_full = F.interpolate(reals, scale_factor=k, mode="nearest")
    fakes_full = F.interpolate(fakes, scale_factor=k, mode="nearest")
    d_real, d_fake = D_full(reals_full), D_full(fakes_full)
    xhat = torch.lerp(reals_full, fakes_full, u).requires_grad_(True)
    (grad,) = torch.autograd.grad(D_full(xhat).sum(), xhat, create_graph=True)
    norm = grad.flatten(1).norm(dim=1)
    penalty = (norm - gp_target).square()
    return d_fake - d_real + gp_lambda / gp_target**2 * penalty + drift * d_real.square()


@pytest.mark.parametrize(("lod", "res", "k"), [(2.0, 8, 4), (1.3, 16, 2), (2.6, 8, 4), (0.0, 32, 1)])
def test_native_penalty_equals_full_resolution_penalty(lod, res, k):
    torch.manual_seed(0)
    D = Discriminator(32, 3, fmap_base=64, fmap_max=16, mbstd_group_size=2).double()
    reals, fakes = (torch.randn(4, 3, res, res, dtype=torch.float64) for _ in range(2))
    u = torch.rand(4, 1, 1, 1, dtype=torch.float64)

    native = wgan_gp_d_loss(D, reals, fakes, u, lod, gp_target=1.0)
    native.total.mean().backward()
    grads_native = {n: p.grad.clone() for n, p in D.named_parameters() if p.grad is not None}
    D.zero_grad(set_to_none=True)
    official = full_resolution_d_loss(D, reals, fakes, u, lod, k)
    official.mean().backward()
    grads_official = {n: p.grad.clone() for n, p in D.named_parameters() if p.grad is not None}

    torch.testing.assert_close(native.total, official, rtol=0, atol=1e-9)
    assert grads_native.keys() == grads_official.keys()
    for name, g in grads_native.items():
        torch.testing.assert_close(
            g, grads_official[name], rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_native_gradient_norm_is_k_times_the_full_resolution_norm():
    """The fact the 1/k relies on: d/dx_full D(avgpool_k(x_full)) at x_full = up_k(x) has norm ||g|| / k."""
    torch.manual_seed(1)
    D = Discriminator(16, 1, fmap_base=32, fmap_max=8, mbstd_group_size=1).double()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    (g_native,) = torch.autograd.grad(D(x, 2.0).sum(), x)
    x_full = F.interpolate(x.detach(), scale_factor=4, mode="nearest").requires_grad_(True)
    (g_full,) = torch.autograd.grad(D(F.avg_pool2d(x_full, 4), 2.0).sum(), x_full)
    ratio = g_native.flatten(1).norm(dim=1) / g_full.flatten(1).norm(dim=1)
    torch.testing.assert_close(ratio, torch.full_like(ratio, 4.0), rtol=1e-12, atol=0)


def test_loss_scale_leaves_the_penalty_unchanged():
    torch.manual_seed(2)
    D = Discriminator(8, 3, fmap_base=32, fmap_max=8, mbstd_group_size=2).double()
    reals, fakes = (torch.randn(4, 3, 8, 8, dtype=torch.float64) for _ in range(2))
    u = torch.rand(4, 1, 1, 1, dtype=torch.float64)
    plain = wgan_gp_d_loss(D, reals, fakes, u, 0.0)
    scaled = wgan_gp_d_loss(D, reals, fakes, u, 0.0, loss_scale=1024.0)
    torch.testing.assert_close(scaled.total, plain.total, rtol=1e-12, atol=1e-12)


def test_generator_and_lsgan_formulas():
    scores = torch.tensor([[0.5], [-2.0]])
    torch.testing.assert_close(wgan_g_loss(scores), torch.tensor([-0.5, 2.0]))
    torch.testing.assert_close(lsgan_g_loss(scores), torch.tensor([0.25, 9.0]))
    # the trainer's fewer-dispatch mean: bit for bit the per-sample mean, value and gradient
    s = torch.randn(16, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
    fast, slow = wgan_g_loss_mean(a), wgan_g_loss(b).mean()
    assert torch.equal(fast, slow)
    fast.backward()
    slow.backward()
    assert torch.equal(a.grad, b.grad)

    class Fixed(torch.nn.Module):
        def forward(self, x, lod):
            return x.mean(dim=(1, 2, 3)).unsqueeze(1)

    reals = torch.full((2, 1, 4, 4), 0.5)
    fakes = torch.full((2, 1, 4, 4), 2.0)
    loss = lsgan_d_loss(Fixed(), reals, fakes, 0.0)
    torch.testing.assert_close(loss.total, torch.tensor([0.25 + 4.0, 0.25 + 4.0]))
