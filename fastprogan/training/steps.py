"""One discriminator step (with the gradient penalty) and one generator step, capture-safe.

Used by the training loop, ``--batch auto``, :mod:`fastprogan.training.graphs` (eager and CUDA-graph
iterations) and ``benchmarks/bench_train_step.py``. Each step: zero grads, forwards under the precision
policy's autocast, mean loss (fp32), backward through the policy's GradScaler (a pass-through unless
fp16), gradients averaged over ranks, optimiser step.

Capture-safe (what a CUDA graph needs; tests/training/test_capture_safe.py checks it under a dispatch
mode): no op reads a tensor value on the host (no ``.item()``, ``nonzero``, ``bool(tensor)``), no
Python branch depends on a tensor value, and everything that changes within a phase is a device tensor
(the fade weight ``alpha``, the latents and mixing factors, the statistics). The one exception is fp16,
whose GradScaler reads its scale on the host (``get_scale``): fp16 runs keep CUDA graphs off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from fastprogan.nn import shared_scaled_weights
from fastprogan.ops.resample_weight import fused_weight_cache
from fastprogan.training.config import TrainingConfig
from fastprogan.training.losses import lsgan_d_loss, lsgan_g_loss, wgan_g_loss_mean, wgan_gp_d_loss
from fastprogan.training.precision import PrecisionPolicy

GradSync = Callable[[nn.Module], None]
Alpha = float | torch.Tensor | None  # fade weight override: a 0-dim device tensor during a fade


def _no_sync(_: nn.Module) -> None:
    return None


def clear_grads(opt: torch.optim.Optimizer) -> None:
    """``opt.zero_grad(set_to_none=True)`` without its profiler scope: torch wraps ``zero_grad`` in a
    ``record_function``, two dispatches per call (4 per iteration) for setting attributes to None."""
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = None


def make_optimizer(
    params: Iterable[nn.Parameter], config: TrainingConfig, device: torch.device, *, capturable: bool = False
) -> torch.optim.Adam:
    """The trainer's Adam (lr_base, betas, eps from ``config``), in its fewest-dispatch form.

    ``fused=True`` on CUDA and CPU (one ``_fused_adam_`` plus one step-counter ``_foreach_add_`` per
    step, instead of ~9 dispatches per parameter for the per-parameter loop torch picks on CPU), the
    ``foreach`` form elsewhere (e.g. ``meta``). ``capturable=True`` (CUDA only) keeps the step count on
    the device so that ``step()`` may be captured into a CUDA graph. Checkpoints of the earlier
    per-parameter Adam load into it unchanged (``load_state_dict`` moves the step count to the
    parameters' device).
    """
    kind = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.Adam(
        params,
        lr=config.lr_base,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_eps,
        capturable=capturable and device.type == "cuda",
        **kind,
    )


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


def d_stat_names(config: TrainingConfig) -> tuple[str, ...]:
    """The D step's statistics, in the order of :func:`discriminator_step_stats`."""
    base = ("d_loss", "real_score", "fake_score")
    return (*base, "gp") if config.loss == "wgan-gp" else base


G_STAT_NAMES = ("g_loss",)


def _run_G(G: nn.Module, z: torch.Tensor, lod: float, alpha: Alpha) -> torch.Tensor:
    """``G(z, lod)``; with a tensor fade weight, the resolution from lod and alpha from the tensor."""
    if not isinstance(alpha, torch.Tensor):
        return G(z, lod)
    return G(z, resolution=G.level(lod).resolution, alpha=alpha)


def _run_D(D: nn.Module, images: torch.Tensor, lod: float, alpha: Alpha) -> torch.Tensor:
    """``D(images, lod)``; with a tensor fade weight, the resolution from the images."""
    if not isinstance(alpha, torch.Tensor):
        return D(images, lod)
    return D(images, alpha=alpha)


def discriminator_step_stats(
    ctx: StepContext,
    reals: torch.Tensor,
    latents: torch.Tensor,
    u: torch.Tensor,
    lod: float,
    *,
    alpha: Alpha = None,
) -> torch.Tensor:
    """Train D once on ``reals`` [N, C, R, R] and G(latents) [N, latent]; u [N, 1, 1, 1] mixes xhat.

    ``lod`` fixes the structure (resolution, penalty scale); a 0-dim tensor ``alpha`` overrides its fade
    weight. Returns the fp32 statistics [K] (:func:`d_stat_names`: mean loss, real/fake scores,
    penalty), on the device, detached.
    """
    cfg = ctx.config
    with torch.no_grad(), ctx.policy.autocast():
        fakes = _run_G(ctx.G, latents, lod, alpha)  # [N, C, R, R]
    clear_grads(ctx.opt_D)
    ctx.D.requires_grad_(True)

    def D(x: torch.Tensor, lod_: float) -> torch.Tensor:
        return _run_D(ctx.D, x, lod_, alpha)

    # The three D passes share one scaled copy of each weight (nn/equalized.py: 4-8 fewer dispatches
    # per layer) and so one 4x4 fused resampling weight per layer (ops/resample_weight.py: built once,
    # not three times; the optimizer step stays outside the scope, as the cache requires).
    with ctx.policy.autocast(), shared_scaled_weights(ctx.D), fused_weight_cache():
        if cfg.loss == "wgan-gp":
            scale = ctx.scaler_D.get_scale() if ctx.scaler_D.is_enabled() else 1.0
            terms = wgan_gp_d_loss(
                D,
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
            terms = lsgan_d_loss(D, reals, fakes, lod, drift=cfg.drift)
        loss = terms.total.mean()
        ctx.scaler_D.scale(loss).backward()
    ctx.sync_grads(ctx.D)
    ctx.scaler_D.step(ctx.opt_D)
    ctx.scaler_D.update()
    with torch.no_grad():
        rows = [terms.total, terms.real_scores, terms.fake_scores]
        if terms.penalty is not None:
            rows.append(terms.penalty)
        return torch.stack(rows).mean(dim=1)  # [K], one reduction for all statistics


def generator_step_stats(
    ctx: StepContext, latents: torch.Tensor, lod: float, *, alpha: Alpha = None
) -> torch.Tensor:
    """Train G once on ``latents`` [N, latent]; D's parameters get no gradients. Returns the loss, 0-dim."""
    clear_grads(ctx.opt_G)
    ctx.D.requires_grad_(False)
    try:
        with ctx.policy.autocast():
            scores = _run_D(ctx.D, _run_G(ctx.G, latents, lod, alpha), lod, alpha)  # [N, 1]
            if ctx.config.loss == "wgan-gp":
                loss = wgan_g_loss_mean(scores)
            else:
                loss = lsgan_g_loss(scores).mean()
        ctx.scaler_G.scale(loss).backward()
    finally:
        ctx.D.requires_grad_(True)
    ctx.sync_grads(ctx.G)
    ctx.scaler_G.step(ctx.opt_G)
    ctx.scaler_G.update()
    return loss.detach()


def discriminator_step(
    ctx: StepContext,
    reals: torch.Tensor,
    latents: torch.Tensor,
    u: torch.Tensor,
    lod: float,
    *,
    alpha: Alpha = None,
) -> dict[str, torch.Tensor]:
    """:func:`discriminator_step_stats` as a dict of detached fp32 0-dim tensors: d_loss, real/fake
    scores, gp (WGAN-GP)."""
    stats = discriminator_step_stats(ctx, reals, latents, u, lod, alpha=alpha)
    return dict(zip(d_stat_names(ctx.config), stats.unbind(), strict=True))


def generator_step(
    ctx: StepContext, latents: torch.Tensor, lod: float, *, alpha: Alpha = None
) -> dict[str, torch.Tensor]:
    """:func:`generator_step_stats` as ``{"g_loss": tensor}``."""
    return {"g_loss": generator_step_stats(ctx, latents, lod, alpha=alpha)}
