"""The resolution pyramid of one image, as the official ProGAN dataset tool builds it.

Each level is the 2x2 box average of the *float* level above it; only the copy that is written is
rounded (``np.rint``, half to even) and clipped to uint8. Rounding each level before downscaling the
next would drift from the official data, so the float chain is kept.
"""

from __future__ import annotations

import numpy as np


def box_downscale2x(x: np.ndarray) -> np.ndarray:
    """2x2 box average over the last two axes of a float array: [..., H, W] -> [..., H/2, W/2]."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"box_downscale2x needs even height and width, got {x.shape[-2:]}")
    # Sum the four phases, then scale once: the same order of operations as the official tool.
    return (x[..., 0::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) * 0.25


def quantize(x: np.ndarray) -> np.ndarray:
    """Round half to even and clip to [0, 255]: the written uint8 copy of a float level."""
    return np.rint(x).clip(0, 255).astype(np.uint8)


def resolutions_for(max_resolution: int) -> list[int]:
    """[4, 8, ..., max_resolution]; max_resolution must be a power of two >= 4."""
    if max_resolution < 4 or max_resolution & (max_resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 4, got {max_resolution}")
    return [1 << k for k in range(2, max_resolution.bit_length())]


def build_pyramid(top: np.ndarray) -> dict[int, np.ndarray]:
    """All levels of uint8 images ``top`` [..., C, R, R], keyed by resolution (R, R/2, ..., 4).

    The top level is returned as given; every lower level is computed in float32 from the float level
    above it. float32 is exact here: a level k steps down holds multiples of 4**-k below 256, which
    needs 8 + 2k mantissa bits, within float32's 24 up to R = 1024.
    """
    res = top.shape[-1]
    if top.dtype != np.uint8 or top.shape[-2] != res:
        raise ValueError(f"build_pyramid needs square uint8 images, got {top.dtype} {top.shape}")
    levels = {res: top}
    x = top.astype(np.float32)  # [..., C, R, R]
    while res > 4:
        x = box_downscale2x(x)  # [..., C, R/2, R/2]
        res //= 2
        levels[res] = quantize(x)
    return levels
