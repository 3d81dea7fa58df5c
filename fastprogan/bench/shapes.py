"""The shapes the bench measures: the paper's channels nf(R) and the v2-1gpu preset's minibatch per
resolution (the training recipe's numbers, read from the preset itself), or tiny ones for --quick."""

from __future__ import annotations

from fastprogan.tools.traffic import nf
from fastprogan.training.presets import PRESETS

RESOLUTIONS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)
QUICK_RESOLUTIONS = (4, 8)
PRESET = "v2-1gpu"
# --quick: a narrow network and a small batch (the shapes only prove the code path; never compared).
QUICK_CHANNELS = 8
QUICK_BATCH = 4

__all__ = ["PRESET", "QUICK_BATCH", "QUICK_CHANNELS", "RESOLUTIONS", "batch_for", "nf", "resolutions"]


def batch_for(resolution: int) -> int:
    """The v2-1gpu preset's minibatch at ``resolution`` (its minibatch_dict, else minibatch_base)."""
    preset = PRESETS[PRESET]
    return preset["minibatch_dict"].get(resolution, preset["minibatch_base"])


def resolutions(quick: bool, only: tuple[int, ...] | None) -> tuple[int, ...]:
    """The resolutions to measure: all of 4..1024 (or the quick pair), filtered by ``only``."""
    base = QUICK_RESOLUTIONS if quick else RESOLUTIONS
    if not only:
        return base
    return tuple(r for r in RESOLUTIONS if r in only)
