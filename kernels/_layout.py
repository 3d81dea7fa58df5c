"""Memory-layout helpers shared by the kernel launchers."""

from __future__ import annotations

import torch


def dense_layout(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(x in a dense layout, channels_last?). NCHW-contiguous and channels_last-contiguous tensors are
    used as they are; any other view (slices, transposes, broadcasts) is copied to NCHW first."""
    if x.ndim == 2:
        return x.contiguous(), True  # [N, C]: one channels_last image of N pixels
    if x.is_contiguous():
        return x, False
    if x.is_contiguous(memory_format=torch.channels_last):
        return x, True
    return x.contiguous(), False
