"""Level of detail (lod) arithmetic shared by the generator, the discriminator and the trainer.

``lod = log2(max_resolution) - log2(active_resolution)`` with a fractional part during a fade-in.
For a given lod the active resolution is ``max_resolution / 2**floor(lod)`` and the new block's blend
weight is ``alpha = 1 - frac(lod)`` (alpha 1: new block alone; alpha 0: the previous resolution's
path). This is the official recursive network's behaviour, run natively at the active resolution.

The fade weight may also be a 0-dim tensor (``alpha=`` with a resolution): a fade whose weight lives on
the device, so a CUDA graph captured once per fade replays with the weight the trainer writes into that
tensor each round. Its value is never read on the host; such a level always counts as fading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def resolution_log2(resolution: int, *, name: str = "resolution") -> int:
    """log2 of a power-of-two resolution >= 4, or ValueError naming the argument."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4:
        raise ValueError(f"{name} must be a power of two >= 4, got {resolution!r}")
    log2 = resolution.bit_length() - 1
    if resolution != 1 << log2:
        raise ValueError(f"{name} must be a power of two >= 4, got {resolution}")
    return log2


@dataclass(frozen=True)
class Level:
    """The active resolution (as log2) and the fade-in weight of its newest block."""

    res_log2: int
    alpha: float | torch.Tensor  # a 0-dim device tensor: a fade whose weight the host never reads

    @property
    def resolution(self) -> int:
        return 1 << self.res_log2

    @property
    def fading(self) -> bool:
        return isinstance(self.alpha, torch.Tensor) or self.alpha < 1.0

    def fade_weight(self, like: torch.Tensor) -> float | torch.Tensor:
        """alpha for ``torch.lerp(old, new, alpha)`` with tensors like ``like`` (a tensor alpha in its dtype)."""
        if isinstance(self.alpha, torch.Tensor):
            return self.alpha.to(like.dtype)
        return self.alpha


def level_for(
    max_res_log2: int, lod: float | None = None, resolution: int | None = None, alpha: float | None = None
) -> Level:
    """Resolve (lod) or (resolution[, alpha]) into a :class:`Level`; neither means full resolution."""
    if lod is not None:
        if resolution is not None or alpha is not None:
            raise ValueError("give either lod or resolution/alpha, not both")
        max_lod = max_res_log2 - 2
        if not (0.0 <= float(lod) <= max_lod) or math.isnan(lod):
            raise ValueError(f"lod must be in [0, {max_lod}] for a {1 << max_res_log2}px network, got {lod}")
        whole = math.floor(lod)
        return Level(max_res_log2 - whole, 1.0 - (float(lod) - whole))
    res_log2 = max_res_log2 if resolution is None else resolution_log2(resolution)
    if res_log2 > max_res_log2:
        raise ValueError(f"resolution {1 << res_log2} exceeds the network's {1 << max_res_log2}")
    if isinstance(alpha, torch.Tensor):  # a device-side fade weight: shape checks only, no value read
        if alpha.ndim != 0 or not alpha.is_floating_point():
            raise ValueError(
                f"a tensor alpha must be a 0-dim float tensor, got {alpha.dtype} {tuple(alpha.shape)}"
            )
        if res_log2 == 2:
            raise ValueError("a fade (tensor alpha) needs a previous resolution; 4x4 has none")
        return Level(res_log2, alpha)
    a = 1.0 if alpha is None else float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if res_log2 == 2 and a < 1.0:
        raise ValueError("alpha < 1 needs a previous resolution; 4x4 has none")
    return Level(res_log2, a)


def lod_for(max_res_log2: int, resolution: int, alpha: float = 1.0) -> float:
    """The lod of (resolution, alpha): the inverse of :func:`level_for`."""
    level = level_for(max_res_log2, resolution=resolution, alpha=alpha)
    return float(max_res_log2 - level.res_log2) + (1.0 - level.alpha)


def feature_maps(stage: int, fmap_base: int = 8192, fmap_decay: float = 1.0, fmap_max: int = 512) -> int:
    """Channels at a stage: ``min(fmap_base / 2**(stage * fmap_decay), fmap_max)``; res 2**r uses stage r-1."""
    return min(int(fmap_base / (2.0 ** (stage * fmap_decay))), fmap_max)


def check_num_channels(num_channels: int) -> int:
    """Image channels: 1 (grayscale) or 3 (RGB), or ValueError."""
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
    return num_channels
