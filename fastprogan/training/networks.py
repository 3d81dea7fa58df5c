"""Building G and D from a TrainingConfig (the one place that maps config fields to network arguments)."""

from __future__ import annotations

from typing import Any

from fastprogan.models import Discriminator, Generator
from fastprogan.training.config import TrainingConfig


def generator_kwargs(config: TrainingConfig, num_channels: int, pixelnorm_eps: float) -> dict[str, Any]:
    return {
        "resolution": config.resolution,
        "num_channels": num_channels,
        "fmap_base": config.fmap_base,
        "fmap_decay": config.fmap_decay,
        "fmap_max": config.fmap_max,
        "latent_size": config.latent_size,
        "pixelnorm_eps": pixelnorm_eps,
        "impl": config.impl,
    }


def build_generator(config: TrainingConfig, num_channels: int, pixelnorm_eps: float) -> Generator:
    """G at the config's final resolution (all blocks exist from the start; the lod picks the active ones)."""
    return Generator(**generator_kwargs(config, num_channels, pixelnorm_eps))


def build_discriminator(config: TrainingConfig, num_channels: int) -> Discriminator:
    return Discriminator(
        resolution=config.resolution,
        num_channels=num_channels,
        fmap_base=config.fmap_base,
        fmap_decay=config.fmap_decay,
        fmap_max=config.fmap_max,
        mbstd_group_size=config.mbstd_group_size,
        impl=config.impl,
    )
