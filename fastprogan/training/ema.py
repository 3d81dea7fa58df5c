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
    buffers (non-trainable state) are copied."""
    ema_params = list(ema.parameters())
    g_params = [p.detach() for p in G.parameters()]
    # lerp(g, ema, beta) == ema + (1 - beta) * (g - ema)
    torch._foreach_lerp_(ema_params, g_params, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)
