"""Turning uint8 batches into the reals the discriminator sees: range, mirror, fade-in.

Mirrors the official ProGAN trainer's ``process_reals``: [0, 255] -> [-1, 1], optional random
left-right mirroring, and the fade of reals during a resolution transition.
"""

from __future__ import annotations

import torch


def box_downscale2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 box average of float images: [N, C, H, W] -> [N, C, H/2, W/2]."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def nearest_upscale2x(x: torch.Tensor) -> torch.Tensor:
    """Each pixel repeated 2x2: [N, C, H, W] -> [N, C, 2H, 2W]."""
    n, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def fade_reals(x: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """The fade-in of reals: ``lerp(nearest_up(box_down(x)), x, alpha)``, same shape as ``x``.

    alpha = 1 returns ``x`` (the new resolution fully in); alpha = 0 returns the 2x2 box-downscaled,
    nearest-upscaled copy (what the previous resolution saw). ``torch.lerp`` is exact at both ends.
    """
    if not isinstance(alpha, torch.Tensor) and alpha >= 1:
        return x
    coarse = nearest_upscale2x(box_downscale2x(x))  # [N, C, H, W]
    return torch.lerp(coarse, x, alpha)


def prepare_reals(
    batch_uint8: torch.Tensor,
    device: torch.device | str,
    *,
    mirror: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 [B, C, H, W] -> ``dtype`` [B, C, H, W] on ``device``, in [-1, 1] (x / 127.5 - 1).

    The uint8 batch is moved first (4x fewer bytes than float; non_blocking from pinned memory).
    With ``mirror``, each sample is flipped left-right on a fair coin drawn on the CPU from
    ``generator`` (a CPU ``torch.Generator``; the global CPU generator if None), so the flips are the
    same on every device. ``flip`` (bool [B]) gives the coins instead: the trainer draws them for the
    global minibatch and passes each rank its slice, so the flips do not depend on the process count.
    """
    x = batch_uint8.to(device, non_blocking=True).to(dtype).div_(127.5).sub_(1.0)
    if mirror:
        if flip is None:
            flip = torch.rand(x.shape[0], generator=generator) < 0.5  # [B] on CPU
        elif flip.shape != (x.shape[0],) or flip.dtype != torch.bool:
            raise ValueError(f"flip must be bool [{x.shape[0]}], got {flip.dtype} {tuple(flip.shape)}")
        flip = flip.to(x.device, non_blocking=True).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)
    return x
