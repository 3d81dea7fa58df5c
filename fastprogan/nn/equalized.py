"""Equalized-learning-rate layers (Karras et al. 2018, section 4.1).

Weights are stored as N(0, 1) and scaled at run time by ``gain / sqrt(fan_in)`` (gain sqrt(2) unless
stated); biases start at zero. Parameters stay fp32 and are cast per call to the activation dtype. The
layer's epilogue (bias + activation + optional pixel norm) is one :func:`fastprogan.ops.bias_act` call,
which runs as a single fused kernel on a GPU: the conv itself never sees the bias.

Scaling once per step: the WGAN-GP D step runs D three times (reals, fakes, x_hat) on unchanged
weights, so it would scale (and, in half precision, cast) every weight three times and differentiate
each of those multiplies again in the backward. Inside :func:`shared_scaled_weights` each layer scales
its weight once, on first use, and reuses that tensor until the block ends (autograd sums the three
passes' gradients into it, then runs one multiply backward): the same numbers up to the order of the
fp32 gradient sum, 4 fewer dispatches per D layer in fp32 and 8 in bf16/fp16 (``python -m
fastprogan.tools.dispatch``). A block never outlives one step: weights change in place at the optimizer
step, and a CUDA-graph replay changes them without running Python, so no cache may cross steps.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from fastprogan.ops import bias_act
from fastprogan.ops.conv2d_bias_act import conv2d_bias_act, layer_impl
from fastprogan.ops.pixel_norm import DEFAULT_EPS

ACTIVATIONS = {"linear": 1.0, "lrelu": None}  # None: use the layer's negative_slope
SQRT2 = math.sqrt(2.0)


@contextlib.contextmanager
def shared_scaled_weights(*modules: nn.Module) -> Iterator[None]:
    """Within the block, every :class:`EqualizedLayer` in ``modules`` scales (and casts) its weight once
    per (dtype, grad mode) and reuses it; the cached tensors are dropped on exit. Nesting is allowed
    (an inner block on a layer already shared keeps the outer cache)."""
    layers = [m for module in modules for m in module.modules() if isinstance(m, EqualizedLayer)]
    opened = [layer for layer in layers if layer._shared_weights is None]
    for layer in opened:
        layer._shared_weights = {}
    try:
        yield
    finally:
        for layer in opened:
            layer._shared_weights = None


class EqualizedLayer(nn.Module):
    """Shared parts of every equalized-LR layer: scaled weight, bias, fused epilogue.

    Subclasses set ``self.weight`` through :meth:`_init_weight` and call :meth:`epilogue` on the output
    of their linear map.
    """

    def __init__(
        self,
        out_features: int,
        *,
        bias: bool,
        activation: str,
        negative_slope: float,
        pixel_norm: bool = False,
        eps: float = DEFAULT_EPS,
        impl: str,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        slope = ACTIVATIONS[activation]
        self.negative_slope = negative_slope if slope is None else slope
        self.pixel_norm = pixel_norm
        self.eps = eps
        self.impl = impl
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        # (dtype, differentiable) -> scaled weight, only inside shared_scaled_weights (else None).
        self._shared_weights: dict[tuple[torch.dtype, bool], torch.Tensor] | None = None

    def _init_weight(self, shape: tuple[int, ...], fan_in: int, gain: float) -> None:
        self.weight = nn.Parameter(torch.randn(shape))
        self.gain = gain
        self.weight_scale = gain / math.sqrt(fan_in)

    def scaled_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The run-time weight, in x's dtype (the one place layers apply the equalized-LR scale)."""
        cache = self._shared_weights
        if cache is None:
            return (self.weight * self.weight_scale).to(x.dtype)
        key = (x.dtype, torch.is_grad_enabled() and self.weight.requires_grad)
        w = cache.get(key)
        if w is None:
            w = cache[key] = (self.weight * self.weight_scale).to(x.dtype)
        return w

    def epilogue(self, y: torch.Tensor) -> torch.Tensor:
        if self.bias is None and self.negative_slope == 1.0 and not self.pixel_norm:
            return y
        return bias_act(y, self.bias, self.negative_slope, self.pixel_norm, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        w = tuple(self.weight.shape)
        return (
            f"weight={w}, gain={self.gain:.4g}, bias={self.bias is not None}, activation={self.activation}"
            + (f", negative_slope={self.negative_slope}" if self.activation == "lrelu" else "")
            + (f", pixel_norm=True, eps={self.eps:g}" if self.pixel_norm else "")
        )


class EqualizedConv2d(EqualizedLayer):
    """Conv2d (stride 1, 'same' padding) with equalized LR and a fused bias/activation/pixel-norm epilogue.

    x [N, C_in, H, W] -> [N, C_out, H, W]; NCHW or channels_last; fp32/bf16/fp16 (also under autocast).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        gain: float = SQRT2,
        bias: bool = True,
        activation: str = "linear",
        negative_slope: float = 0.2,
        pixel_norm: bool = False,
        eps: float = DEFAULT_EPS,
        impl: str = "auto",
    ) -> None:
        super().__init__(
            out_channels,
            bias=bias,
            activation=activation,
            negative_slope=negative_slope,
            pixel_norm=pixel_norm,
            eps=eps,
            impl=impl,
        )
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self._init_weight(
            (out_channels, in_channels, kernel_size, kernel_size), in_channels * kernel_size**2, gain
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 3x3: conv + epilogue as one kernel where the impl switch / dispatch picks it (ops.conv2d_bias_act)
        impl = layer_impl(self.impl, x, self.out_channels) if self.kernel_size == 3 else None
        if impl is not None:
            return conv2d_bias_act(
                x, self.scaled_weight(x), self.bias, self.negative_slope, self.pixel_norm, self.eps, impl=impl
            )
        return self.epilogue(F.conv2d(x, self.scaled_weight(x), padding=self.kernel_size // 2))


class EqualizedLinear(EqualizedLayer):
    """Dense layer with equalized LR and a fused bias/activation epilogue. x [N, in] -> [N, out]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        gain: float = SQRT2,
        bias: bool = True,
        activation: str = "linear",
        negative_slope: float = 0.2,
        impl: str = "auto",
    ) -> None:
        super().__init__(
            out_features, bias=bias, activation=activation, negative_slope=negative_slope, impl=impl
        )
        self.in_features, self.out_features = in_features, out_features
        self._init_weight((out_features, in_features), in_features, gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.epilogue(F.linear(x, self.scaled_weight(x)))
