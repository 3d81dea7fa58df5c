"""The official ProGAN training schedule: what to train at a given number of images shown.

One function, :func:`schedule_at`, used by the trainer, the benchmark and the tests::

    kimg      = nimg / 1000
    phase_dur = lod_training_kimg + lod_transition_kimg
    phase_idx = floor(kimg / phase_dur);  phase_kimg = kimg - phase_idx * phase_dur
    lod       = L - log2(initial_res) - phase_idx - max(phase_kimg - lod_training_kimg, 0) / lod_transition_kimg
    lod       = max(lod, 0)
    resolution = 2 ** (L - floor(lod));  alpha = 1 - frac(lod)
    minibatch = minibatch_dict.get(resolution, minibatch_base);  minibatch -= minibatch % num_gpus
    lr        = lr_dict.get(resolution, lr_base);  tick_kimg = tick_kimg_dict.get(resolution, tick_kimg_base)

L = log2(final resolution). The trainer re-reads the schedule every ``minibatch_repeats`` minibatches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastprogan.training.config import TrainingConfig
from fastprogan.training.errors import ConfigError


@dataclass(frozen=True)
class TrainingPhase:
    """The schedule's answer at one point of training."""

    kimg: float
    lod: float
    resolution: int
    alpha: float  # weight of the newest block: 1 - frac(lod)
    minibatch: int  # total over all processes
    lr: float
    tick_kimg: float

    @property
    def lod_key(self) -> tuple[int, int]:
        """(floor(lod), ceil(lod)): when it changes the official trainer resets both Adam states."""
        return math.floor(self.lod), math.ceil(self.lod)

    @property
    def fading(self) -> bool:
        return self.alpha < 1.0


def minibatch_for(config: TrainingConfig, resolution: int, num_gpus: int) -> int:
    """The total minibatch at ``resolution`` for ``num_gpus`` processes (a multiple of it)."""
    minibatch = config.minibatch_dict.get(resolution, config.minibatch_base)
    minibatch -= minibatch % num_gpus
    if minibatch < 1:
        raise ConfigError(f"minibatch at {resolution}px is smaller than the {num_gpus} processes")
    return minibatch


def schedule_at(config: TrainingConfig, nimg: int, num_gpus: int | None = None) -> TrainingPhase:
    """The official schedule at ``nimg`` images shown, for ``num_gpus`` (default: the config's)."""
    if config.resolution is None:
        raise ConfigError("resolution is unresolved (set it or open the dataset first)")
    gpus = config.num_gpus if num_gpus is None else num_gpus
    res_log2 = int(math.log2(config.resolution))
    kimg = nimg / 1000.0
    phase_dur = config.lod_training_kimg + config.lod_transition_kimg
    phase_idx = math.floor(kimg / phase_dur)
    phase_kimg = kimg - phase_idx * phase_dur
    lod = float(res_log2 - int(math.log2(config.lod_initial_resolution)) - phase_idx)
    if config.lod_transition_kimg > 0:
        lod -= max(phase_kimg - config.lod_training_kimg, 0.0) / config.lod_transition_kimg
    lod = max(lod, 0.0)
    resolution = 2 ** (res_log2 - math.floor(lod))
    minibatch = minibatch_for(config, resolution, gpus)
    return TrainingPhase(
        kimg=kimg,
        lod=lod,
        resolution=resolution,
        alpha=1.0 - (lod - math.floor(lod)),
        minibatch=minibatch,
        lr=config.lr_dict.get(resolution, config.lr_base),
        tick_kimg=config.tick_kimg_dict.get(resolution, config.tick_kimg_base),
    )
