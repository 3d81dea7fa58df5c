"""G_ema ("Gs"): an exponential moving average of G's weights, used for every image we show."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(G: nn.Module) -> nn.Module:
    """A frozen copy of G in eval mode, starting equal to G."""
    ema = copy.deepcopy(G).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, G: nn.Module, beta: float) -> None:
    """``ema = lerp(G, ema, beta)`` for every parameter (official ``setup_as_moving_average_of``);
    buffers (non-trainable state) are copied.

    One ``_foreach_lerp_`` for all parameters and one ``_foreach_copy_`` for the buffers: two dispatches
    whatever the network's size (it was 1 + one ``detach`` per parameter, 78 at 256x256). No tensor value
    is read on the host, so the update is CUDA-graph capturable.
    """
    # lerp(g, ema, beta) == ema + (1 - beta) * (g - ema). Under no_grad G's parameters are read as
    # plain tensors: no detach() needed.
    torch._foreach_lerp_(list(ema.parameters()), list(G.parameters()), 1.0 - beta)
    ema_buffers, buffers = list(ema.buffers()), list(G.buffers())
    if len(ema_buffers) != len(buffers):
        raise ValueError(f"G_ema has {len(ema_buffers)} buffers, G has {len(buffers)}: not a copy of G")
    if buffers:
        torch._foreach_copy_(ema_buffers, buffers)
