"""GAN losses, computed at the active (native) resolution, each returning per-sample terms.

WGAN-GP (the default), per sample, k = 2**floor(lod):

    D: D(fake) - D(real) + gp_lambda / gp_target**2 * (||grad_xhat D(xhat)||_2 / k - gp_target)**2
       + drift * D(real)**2,     xhat = lerp(real, fake, u),  u ~ U(0, 1) per sample
    G: -D(fake)

The official trainer feeds D full-resolution images (the native images nearest-upscaled by k), so its
penalty norm is taken w.r.t. the full-resolution xhat. D sees ``avg_pool(up(x)) == x``, so the gradient
w.r.t. the full-resolution image is ``up(grad_native) / k**2``, whose norm is ``||grad_native|| / k``:
dividing by k gives the official penalty at every level of detail (tests/training/test_losses.py).

LSGAN (``loss="lsgan"``, no penalty): D: (D(real) - 1)**2 + D(fake)**2 (+ drift * D(real)**2);
G: (D(fake) - 1)**2. The trainer averages every loss over the minibatch.

Precision: D's forwards run under the caller's autocast; scores, the gradient norm and every loss term
are fp32. For fp16 with a GradScaler, pass ``loss_scale``: the penalty's input gradient is taken from the
scaled output and unscaled before the norm (PyTorch's AMP "gradient penalty" recipe), so small
gradients do not underflow in the half-precision backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fastprogan.ops._common import reduction_dtype


@dataclass
class DiscriminatorLoss:
    """Per-sample terms (fp32, [N]); ``total`` is what the trainer averages and backpropagates."""

    total: torch.Tensor
    real_scores: torch.Tensor
    fake_scores: torch.Tensor
    penalty: torch.Tensor | None  # (norm / k - target)**2, before lambda


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision values to fp32 (losses and norms reduce in fp32); fp32/fp64 unchanged."""
    return x.to(reduction_dtype(x.dtype))


def _detached(x: torch.Tensor) -> torch.Tensor:
    """``x.detach()``, skipped (one dispatch less) where x has no autograd history to cut: the
    trainer's reals and its fakes, drawn under no_grad."""
    return x.detach() if x.requires_grad else x


def penalty_norm_scale(lod: float) -> float:
    """1 / 2**floor(lod): native gradient norm -> norm w.r.t. the full-resolution image."""
    return 1.0 / float(2 ** math.floor(lod))


def wgan_gp_d_loss(
    D: nn.Module,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    u: torch.Tensor,
    lod: float,
    *,
    gp_lambda: float = 10.0,
    gp_target: float = 1.0,
    drift: float = 0.001,
    loss_scale: float = 1.0,
) -> DiscriminatorLoss:
    """WGAN-GP D loss terms. reals, fakes [N, C, R, R] at the active resolution; u [N, 1, 1, 1].

    The three D passes (reals, fakes, xhat) run separately, so each has its own minibatch-stddev groups,
    as in the official code.
    """
    real_scores = at_least_fp32(D(reals, lod)).squeeze(1)  # [N]
    fake_scores = at_least_fp32(D(fakes, lod)).squeeze(1)  # [N]
    # Mixed in the reals' dtype (fakes may come out of G in bf16/fp16); autocast casts inside D.
    xhat = torch.lerp(_detached(reals), _detached(fakes).to(reals.dtype), u.to(reals.dtype))
    xhat.requires_grad_(True)
    mixed_scores = at_least_fp32(D(xhat, lod))  # [N, 1]
    mixed_sum = mixed_scores.sum() if loss_scale == 1.0 else mixed_scores.sum() * loss_scale
    (grad,) = torch.autograd.grad(mixed_sum, xhat, create_graph=True)
    grad = at_least_fp32(grad)  # [N, C, R, R]
    if loss_scale != 1.0:
        grad = grad * (1.0 / loss_scale)
    norm = grad.square().sum(dim=(1, 2, 3)).sqrt() * penalty_norm_scale(lod)  # [N]
    penalty = (norm - gp_target).square()
    total = fake_scores - real_scores + penalty * (gp_lambda / gp_target**2) + drift * real_scores.square()
    return DiscriminatorLoss(total, real_scores.detach(), fake_scores.detach(), penalty.detach())


def lsgan_d_loss(
    D: nn.Module, reals: torch.Tensor, fakes: torch.Tensor, lod: float, *, drift: float = 0.0
) -> DiscriminatorLoss:
    """Least-squares D loss terms: (D(real) - 1)**2 + D(fake)**2 (+ drift * D(real)**2)."""
    real_scores = at_least_fp32(D(reals, lod)).squeeze(1)
    fake_scores = at_least_fp32(D(fakes, lod)).squeeze(1)
    total = (real_scores - 1).square() + fake_scores.square() + drift * real_scores.square()
    return DiscriminatorLoss(total, real_scores.detach(), fake_scores.detach(), None)


def wgan_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """-D(G(z)) per sample (fp32)."""
    return -at_least_fp32(fake_scores).squeeze(1)


def wgan_g_loss_mean(fake_scores: torch.Tensor) -> torch.Tensor:
    """``wgan_g_loss(fake_scores).mean()``, 0-dim fp32, as ``-mean(D(G(z)))``: the same value (negation is
    exact) in two dispatches instead of three, and two backward ops instead of three."""
    return -at_least_fp32(fake_scores).mean()


def lsgan_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """(D(G(z)) - 1)**2 per sample (fp32)."""
    return (at_least_fp32(fake_scores).squeeze(1) - 1).square()
