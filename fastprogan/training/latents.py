"""Paths through latent space: interpolation between seeds and the official smoothed random walk.

- :func:`interpolation_path`: linear (or spherical) interpolation between the pixel-normalised latents
  of key seeds, ``frames`` per segment, endpoints included (neighbouring segments share a key).
- :func:`smoothed_random_walk`: the official release's interpolation video latents: one N(0, I) draw
  per frame, a Gaussian filter over time (sigma = ``smoothing_sec * fps`` frames, periodic boundary,
  as ``scipy.ndimage.gaussian_filter(..., mode="wrap")``), then divided by the global RMS.
"""

from __future__ import annotations

import itertools
import math

import torch

from fastprogan.ops import pixel_norm


def interpolation_path(keys: torch.Tensor, frames: int, *, slerp: bool = False) -> torch.Tensor:
    """keys [K, D] (K >= 2) -> latents [(K-1)*(frames-1) + 1, D] along the pixel-normalised keys.

    The frame at each key is the key itself, bit for bit: a generator that pixel-normalises its input
    (every ProGAN G) maps it to the same point as its normalised form, and the frame then equals the
    plain image of that seed exactly.
    """
    if keys.ndim != 2 or keys.shape[0] < 2:
        raise ValueError(f"interpolation needs at least 2 latents [K, D], got {tuple(keys.shape)}")
    if frames < 2:
        raise ValueError(f"frames must be >= 2 (the two endpoints), got {frames}")
    unit = pixel_norm(keys.float(), impl="ref")  # [K, D], RMS 1 per key
    t = torch.linspace(0.0, 1.0, frames, dtype=torch.float64)[:-1]  # [F-1]: the end is the next start
    out = []
    for a, b in itertools.pairwise(unit):
        if slerp:
            out.append(_slerp(a, b, t))
        else:
            out.append(torch.lerp(a[None], b[None], t[:, None].float()))  # [F-1, D]
    path = torch.cat([*out, unit[-1:]])
    path[:: frames - 1] = keys.float()  # the keys themselves at t = 0 and 1 of every segment
    return path


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between a, b [D] at t [T] (float64 weights) -> [T, D]."""
    a64, b64 = a.double(), b.double()
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm())
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(omega) < 1e-6:  # (nearly) the same direction: lerp is exact enough
        return torch.lerp(a[None], b[None], t[:, None].float())
    wa = torch.sin((1 - t) * omega) / torch.sin(omega)
    wb = torch.sin(t * omega) / torch.sin(omega)
    return (wa[:, None] * a64 + wb[:, None] * b64).float()


def gaussian_filter_wrap(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Gaussian filter along dim 0 of x [T, ...] with a periodic boundary (scipy's
    ``gaussian_filter1d(x, sigma, axis=0, mode="wrap", truncate=4.0)``); sigma 0 returns x."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x.clone()
    radius = int(truncate * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (taps / sigma) ** 2)
    weights = (weights / weights.sum()).to(x.dtype)
    out = torch.zeros_like(x)
    # One shifted add per tap: O(T * D) memory, whatever the radius.
    for k, w in zip(range(-radius, radius + 1), weights, strict=True):
        out += w * torch.roll(x, shifts=-k, dims=0)  # x[(t + k) mod T]
    return out


def smoothed_random_walk(
    num_frames: int, latent_size: int, *, fps: float, smoothing_sec: float = 1.0, seed: int = 0
) -> torch.Tensor:
    """The official video latents [num_frames, latent_size] (float32, CPU), deterministic per seed."""
    if num_frames < 1:
        raise ValueError(f"the video needs at least one frame, got {num_frames}")
    z = torch.randn(
        num_frames, latent_size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    z = gaussian_filter_wrap(z, smoothing_sec * fps)
    rms = math.sqrt(float(z.square().mean()))
    return (z / rms).float()
