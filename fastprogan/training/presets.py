"""The official training presets (PROGAN_SPEC.md section 2) plus ``quickstart`` for a CPU demo.

Each preset is a dict of :class:`~fastprogan.training.config.TrainingConfig` field overrides. The v2
presets are the official release's CelebA-HQ configurations for 1, 2, 4 and 8 GPUs (minibatch totals
over all GPUs; the learning rate applies to both G and D); ``v1`` is the paper's original setup.
"""

from __future__ import annotations

from typing import Any

_CELEBA_HQ: dict[str, Any] = {"resolution": 1024, "mirror": True}

PRESETS: dict[str, dict[str, Any]] = {
    "v2-1gpu": {
        **_CELEBA_HQ,
        "num_gpus": 1,
        "minibatch_base": 4,
        "minibatch_dict": {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4},
        "lr_dict": {1024: 0.0015},
    },
    "v2-2gpu": {
        **_CELEBA_HQ,
        "num_gpus": 2,
        "minibatch_base": 8,
        "minibatch_dict": {4: 256, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8},
        "lr_dict": {512: 0.0015, 1024: 0.002},
    },
    "v2-4gpu": {
        **_CELEBA_HQ,
        "num_gpus": 4,
        "minibatch_base": 16,
        "minibatch_dict": {4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16},
        "lr_dict": {256: 0.0015, 512: 0.002, 1024: 0.003},
    },
    "v2-8gpu": {
        **_CELEBA_HQ,
        "num_gpus": 8,
        "minibatch_base": 32,
        "minibatch_dict": {4: 512, 8: 256, 16: 128, 32: 64, 64: 32},
        "lr_dict": {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003},
    },
    "v1": {
        **_CELEBA_HQ,
        "num_gpus": 1,
        "minibatch_base": 16,
        "minibatch_dict": {256: 14, 512: 6, 1024: 3},
        "lr_dict": {},
        "mbstd_group_size": 16,
        "lod_training_kimg": 800.0,
        "lod_transition_kimg": 800.0,
        "total_kimg": 19000.0,
    },
    # The embedded 16x16 grey digits, a narrow network and a short schedule: 4x4 stable, fade to 8,
    # 8 stable, fade to 16, 16 stable. A few minutes on a 2-core CPU.
    "quickstart": {
        "resolution": 16,
        "num_gpus": 1,
        "mirror": False,  # digits are not mirror-symmetric
        "fmap_base": 256,
        "fmap_max": 64,
        "minibatch_base": 32,
        "minibatch_dict": {},
        "lr_dict": {},
        "lod_training_kimg": 6.0,
        "lod_transition_kimg": 6.0,
        "total_kimg": 30.0,
        "tick_kimg_base": 2.0,
        "tick_kimg_dict": {},
        "snapshot_ticks": 5,
        "grid_images": 64,
        # ~940 D steps in all: with the official 0.999, G_ema would still be 0.999**940 = 39% its random
        # init at the end; 0.99 (half-life ~70 steps, ~2 kimg) lets the grids show what G learned.
        "ema_beta": 0.99,
        # Tiny layers: one intra-op thread beats several (4-9x on a busy 2-core machine).
        "cpu_threads": 1,
    },
}

DEFAULT_PRESET = "quickstart"


def preset_names() -> list[str]:
    return list(PRESETS)
