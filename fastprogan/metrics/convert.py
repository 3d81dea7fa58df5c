"""Conversion of generator output to the uint8 images every metric is computed on."""

from __future__ import annotations

import torch


def to_uint8(images: torch.Tensor, rgb: bool = False) -> torch.Tensor:
    """Map generator output in [-1, 1] to uint8 0..255 (protocol: x * 127.5 + 127.5, rounded, clipped).

    images: float [N, C, H, W]. With ``rgb=True`` a single channel is tiled to three (SWD and FID
    work on RGB neighbourhoods). Rounding is round-half-to-even, like numpy's rint.
    """
    if images.dtype == torch.uint8:
        out = images
    else:
        out = (images.float() * 127.5 + 127.5).round_().clamp_(0, 255).to(torch.uint8)  # [N, C, H, W]
    return tile_rgb(out) if rgb else out


def tile_rgb(images: torch.Tensor) -> torch.Tensor:
    """Tile a grayscale batch [N, 1, H, W] to [N, 3, H, W]; RGB batches pass through unchanged."""
    if images.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    c = images.shape[1]
    if c == 3:
        return images
    if c == 1:
        return images.expand(-1, 3, -1, -1)
    raise ValueError(f"expected 1 or 3 channels, got {c}")
