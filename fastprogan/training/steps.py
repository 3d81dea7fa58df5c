"""One discriminator step (with the gradient penalty) and one generator step.

Used by the training loop, ``--batch auto`` and ``benchmarks/bench_train_step.py``. Each step: zero
grads, forwards under the precision policy's autocast, mean loss (fp32), backward through the
policy's GradScaler (a pass-through unless fp16), gradients averaged over ranks, optimiser step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fastprogan.training.config import TrainingConfig
from fastprogan.training.losses import lsgan_d_loss, lsgan_g_loss, wgan_g_loss, wgan_gp_d_loss
from fastprogan.training.precision import PrecisionPolicy

GradSync = Callable[[nn.Module], None]


def _no_sync(_: nn.Module) -> None:
    return None


@dataclass
class StepContext:
    """What both steps need besides the batch."""

    G: nn.Module
    D: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    scaler_G: torch.amp.GradScaler
    scaler_D: torch.amp.GradScaler
    policy: PrecisionPolicy
    config: TrainingConfig
    sync_grads: GradSync = _no_sync


def discriminator_step(
    ctx: StepContext, reals: torch.Tensor, latents: torch.Tensor, u: torch.Tensor, lod: float
) -> dict[str, torch.Tensor]:
    """Train D once on ``reals`` [N, C, R, R] and G(latents) [N, latent]; u [N, 1, 1, 1] mixes xhat.

    Returns detached fp32 scalars: d_loss, real/fake scores, penalty (WGAN-GP).
    """
    cfg = ctx.config
    with torch.no_grad(), ctx.policy.autocast():
        fakes = ctx.G(latents, lod)  # [N, C, R, R]
    ctx.opt_D.zero_grad(set_to_none=True)
    ctx.D.requires_grad_(True)
    with ctx.policy.autocast():
        if cfg.loss == "wgan-gp":
            scale = ctx.scaler_D.get_scale() if ctx.scaler_D.is_enabled() else 1.0
            terms = wgan_gp_d_loss(
                ctx.D,
                reals,
                fakes,
                u,
                lod,
                gp_lambda=cfg.gp_lambda,
                gp_target=cfg.gp_target,
                drift=cfg.drift,
                loss_scale=scale,
            )
        else:
            terms = lsgan_d_loss(ctx.D, reals, fakes, lod, drift=cfg.drift)
        loss = terms.total.mean()
    ctx.scaler_D.scale(loss).backward()
    ctx.sync_grads(ctx.D)
    ctx.scaler_D.step(ctx.opt_D)
    ctx.scaler_D.update()
    stats = {
        "d_loss": loss.detach(),
        "real_score": terms.real_scores.mean(),
        "fake_score": terms.fake_scores.mean(),
    }
    if terms.penalty is not None:
        stats["gp"] = terms.penalty.mean()
    return stats


def generator_step(ctx: StepContext, latents: torch.Tensor, lod: float) -> dict[str, torch.Tensor]:
    """Train G once on ``latents`` [N, latent]; D's parameters get no gradients."""
    ctx.opt_G.zero_grad(set_to_none=True)
    ctx.D.requires_grad_(False)
    try:
        with ctx.policy.autocast():
            scores = ctx.D(ctx.G(latents, lod), lod)  # [N, 1]
            per_sample = wgan_g_loss(scores) if ctx.config.loss == "wgan-gp" else lsgan_g_loss(scores)
            loss = per_sample.mean()
        ctx.scaler_G.scale(loss).backward()
    finally:
        ctx.D.requires_grad_(True)
    ctx.sync_grads(ctx.G)
    ctx.scaler_G.step(ctx.opt_G)
    ctx.scaler_G.update()
    return {"g_loss": loss.detach()}
