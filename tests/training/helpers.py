"""Helpers shared by the training tests."""

from __future__ import annotations

from fastprogan.training.config import TrainingConfig


def tiny_config(data, **overrides) -> TrainingConfig:
    """A narrow 16px network and a schedule with both a fade and a stable phase in ~1-2 kimg."""
    values = dict(
        data=str(data),
        resolution=16,
        fmap_base=64,
        fmap_max=16,
        mbstd_group_size=4,
        minibatch_base=16,
        minibatch_dict={},
        lod_training_kimg=0.128,
        lod_transition_kimg=0.128,
        total_kimg=0.64,
        tick_kimg_base=0.064,
        tick_kimg_dict={},
        snapshot_ticks=2,
        grid_images=16,
        num_workers=0,
        mirror=True,
        seed=3,
    )
    values.update(overrides)
    return TrainingConfig.from_preset("quickstart", **values)
