"""Seeds -> latents -> images -> PNG files and grids (shared by the trainer and ``fastprogan generate``).

A seed means the same latent on every device: ``z = torch.randn(latent_size,
generator=torch.Generator().manual_seed(seed))`` on the CPU, then moved. Images in [-1, 1] map to
uint8 by ``round(x * 127.5 + 127.5)`` clipped to [0, 255].
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

RENDER_BATCH = 32  # the default, so the trainer's grid and `generate` run identical batches
GRID_PAD = 2  # px of white between grid cells (trainer grids, TensorBoard, `generate --grid`)
GRID_PAD_VALUE = 255


def parse_seeds(text: str) -> list[int]:
    """``"0-63"``, ``"1,5,9"`` or ``"0-3,10"`` -> seeds (ValueError naming the bad part)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            if sep:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ValueError(f"bad seed range {part!r}: use N, A-B or a comma list") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds must be non-negative integers, got {text!r}")
    return seeds


def latents_for_seeds(seeds: Sequence[int], latent_size: int) -> torch.Tensor:
    """[len(seeds), latent_size] float32 on CPU, one N(0, I) draw per seed."""
    return torch.stack([torch.randn(latent_size, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def render(
    G: nn.Module,
    seeds: Sequence[int],
    lod: float,
    device: torch.device | str,
    *,
    batch: int = RENDER_BATCH,
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """G(z_seed, lod) for each seed (fp32 unless ``autocast``), in batches -> uint8 CPU [N, C, R, R]."""
    return torch.cat(
        list(render_latents(G, latents_for_seeds(seeds, G.latent_size), lod, device, batch, autocast))
    )


@torch.no_grad()
def render_latents(
    G: nn.Module,
    z: torch.Tensor,
    lod: float,
    device: torch.device | str,
    batch: int = RENDER_BATCH,
    autocast: contextlib.AbstractContextManager | None = None,
) -> Iterator[torch.Tensor]:
    """G(z, lod) for latents z [N, latent] (CPU) in batches of ``batch``: yields uint8 CPU [B, C, R, R].

    ``autocast`` is a reusable context (e.g. PrecisionPolicy.autocast()) entered per batch.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    for i in range(0, z.shape[0], batch):
        with autocast if autocast is not None else contextlib.nullcontext():
            images = G(z[i : i + batch].to(device), lod)  # [B, C, R, R]
        yield to_uint8(images).cpu()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 [0, 255]."""
    return (images.float() * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)


def make_grid(
    images: torch.Tensor, columns: int | None = None, pad: int = GRID_PAD, pad_value: int = GRID_PAD_VALUE
) -> torch.Tensor:
    """uint8 [N, C, H, W] -> one uint8 [C, rows*H + (rows-1)*pad, cols*W + (cols-1)*pad] image
    (row-major; ``pad`` px of ``pad_value`` between cells; empty cells black)."""
    if pad < 0:
        raise ValueError(f"grid pad must be >= 0, got {pad}")
    n, c, h, w = images.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + pad) - pad, cols * (w + pad) - pad), pad_value, dtype=torch.uint8)
    for i in range(rows * cols):
        r, k = divmod(i, cols)
        y, x = r * (h + pad), k * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i] if i < n else 0
    return grid


def save_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """uint8 [C, H, W] (C = 1 or 3) -> PNG, written atomically (temp file + rename).

    A failed write (full disk, unwritable directory) removes the temporary file and raises
    OutputError naming ``path`` and the fix.
    """
    from PIL import Image

    from fastprogan.training.atomic import write_atomically

    arr = image.permute(1, 2, 0).numpy()  # [H, W, C]
    pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)  # uint8: "L" or "RGB"
    return write_atomically(path, lambda tmp: pil.save(tmp, format="PNG"))


def save_grid(images: torch.Tensor, paths: Iterable[str | os.PathLike]) -> torch.Tensor:
    """One grid of uint8 [N, C, H, W] images written to every path in ``paths``; returns the grid."""
    grid = make_grid(images)
    for p in paths:
        save_png(grid, p)
    return grid
