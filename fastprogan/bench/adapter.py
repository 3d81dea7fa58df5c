"""The one place the bench touches the training API: build one training iteration.

An iteration is what the trainer does per minibatch: one D step with the WGAN-GP penalty, one G step and
the G_ema update, through :mod:`fastprogan.training.steps` and :mod:`fastprogan.training.ema` with the
networks from :mod:`fastprogan.training.networks`. When the steps API changes, only this file changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fastprogan.bench.shapes import PRESET
from fastprogan.training.config import TrainingConfig
from fastprogan.training.ema import make_ema, update_ema
from fastprogan.training.networks import build_discriminator, build_generator
from fastprogan.training.precision import resolve_precision
from fastprogan.training.steps import StepContext, discriminator_step, generator_step, make_optimizer


@dataclass(frozen=True)
class TrainSetup:
    """One training iteration's shape: networks at ``resolution`` (lod 0: every block active, faded in)."""

    resolution: int
    batch: int
    precision: str  # fp32 | bf16 | fp16
    device: torch.device
    fmap_base: int = 8192  # the paper's widths
    fmap_max: int = 512
    channels: int = 3
    seed: int = 1000


class TrainIteration:
    """Callable: one D step (with penalty), one G step, one EMA update, on fixed inputs."""

    def __init__(self, ctx: StepContext, G: nn.Module, G_ema: nn.Module, reals, latents, u, beta: float):
        self.ctx = ctx
        self.G = G  # the plain module (ctx.G may be a compiled wrapper of it)
        self.G_ema = G_ema
        self.reals = reals  # [N, C, R, R]
        self.latents = latents  # [N, latent]
        self.u = u  # [N, 1, 1, 1]
        self.lod = 0.0
        self.beta = beta

    def __call__(self) -> None:
        discriminator_step(self.ctx, self.reals, self.latents, self.u, self.lod)
        generator_step(self.ctx, self.latents, self.lod)
        update_ema(self.G_ema, self.G, self.beta)


def _networks(setup: TrainSetup, impl: str):
    """Config, precision policy, G, D and G_ema for ``setup`` with ops ``impl`` (seeded)."""
    config = TrainingConfig.from_preset(
        PRESET,
        resolution=setup.resolution,
        fmap_base=setup.fmap_base,
        fmap_max=setup.fmap_max,
        impl=impl,
        precision=setup.precision,
        seed=setup.seed,
    )
    policy = resolve_precision(setup.precision, setup.device)
    torch.manual_seed(setup.seed)
    G = build_generator(config, setup.channels, policy.pixelnorm_eps).to(setup.device)
    D = build_discriminator(config, setup.channels).to(setup.device)
    return config, policy, G, D, make_ema(G)


def _reals(setup: TrainSetup) -> torch.Tensor:
    n, r = setup.batch, setup.resolution
    return torch.rand(n, setup.channels, r, r, device=setup.device) * 2 - 1  # [N, C, R, R]


def make_train_iteration(
    setup: TrainSetup,
    *,
    impl: str,
    wrap_generator: Callable[[nn.Module], nn.Module] | None = None,
    wrap_discriminator: Callable[[nn.Module], nn.Module] | None = None,
) -> TrainIteration:
    """Build G, D, G_ema, optimisers and inputs for ``setup`` with ops ``impl`` (auto | ref | triton).

    ``wrap_*`` replace the module the steps call (e.g. torch.compile); parameters stay the plain module's.
    """
    config, policy, G, D, G_ema = _networks(setup, impl)

    def adam(module: nn.Module) -> torch.optim.Adam:
        betas = (config.adam_beta1, config.adam_beta2)
        return torch.optim.Adam(module.parameters(), lr=config.lr_base, betas=betas, eps=config.adam_eps)

    ctx = StepContext(
        wrap_generator(G) if wrap_generator else G,
        wrap_discriminator(D) if wrap_discriminator else D,
        adam(G),
        adam(D),
        policy.make_scaler(),
        policy.make_scaler(),
        policy,
        config,
    )
    reals = _reals(setup)
    latents = torch.randn(setup.batch, G.latent_size, device=setup.device)
    u = torch.rand(setup.batch, 1, 1, 1, device=setup.device)
    return TrainIteration(ctx, G, G_ema, reals, latents, u, config.ema_beta)


def make_trainer_iteration(setup: TrainSetup, *, impl: str, cuda_graphs: bool) -> Callable[[], None]:
    """The trainer's own iteration (:func:`fastprogan.training.graphs.build_training_iteration`): the
    capture-safe steps with latents and mixing factors drawn on the device, fused Adam, device-side
    statistics; ``cuda_graphs=True`` warms up, captures the D and G steps once and replays them."""
    from fastprogan.training.graphs import build_training_iteration

    config, policy, G, D, G_ema = _networks(setup, impl)
    opt_G, opt_D = (
        make_optimizer(m.parameters(), config, setup.device, capturable=cuda_graphs) for m in (G, D)
    )
    step = build_training_iteration(
        G, D, opt_G, opt_D, policy, config, 0.0, minibatch=setup.batch, G_ema=G_ema, cuda_graphs=cuda_graphs
    )
    reals = _reals(setup)
    return lambda: step(reals)
