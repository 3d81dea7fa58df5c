"""fastprogan: fast Progressive Growing of GANs for PyTorch.

Layers point one way: kernels -> ops -> nn -> models -> training / cli. Importing the package is
light: sub-packages load on first use (so does torch, inside :func:`load_generator`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__version__ = "0.1.0"

__all__ = ["__version__", "load_generator"]


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A ready generator (G_ema, eval mode, gradients off) on ``device`` from a fastprogan checkpoint,
    a run directory (its newest checkpoint) or an official release pickle (read without running code).

    ``G(z)`` renders at full resolution; ``G.lod`` is the level of detail the file was saved at (0 for
    a finished run or a release network): ``G(torch.randn(8, G.latent_size), G.lod)`` -> images
    [8, C, R, R] in about [-1, 1].
    """
    from fastprogan.training.checkpoint import load_generator as _load

    G, meta = _load(path, device)
    G.lod = float(meta["lod"])
    return G
