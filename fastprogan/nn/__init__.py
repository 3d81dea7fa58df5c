"""Drop-in ``nn.Module`` layers for ProGAN-style networks (and your own GANs).

All accept NCHW or channels_last inputs, run under ``torch.autocast`` (bf16/fp16), keep fp32
parameters, and route their bias/activation/pixel-norm epilogue through one fused op.
"""

from fastprogan.nn.equalized import EqualizedConv2d, EqualizedLayer, EqualizedLinear, shared_scaled_weights
from fastprogan.nn.layers import BiasAct, FromRGB, MinibatchStdDev, PixelNorm, ToRGB
from fastprogan.nn.resample import ConvDownscale2d, UpscaleConv2d

__all__ = [
    "BiasAct",
    "ConvDownscale2d",
    "EqualizedConv2d",
    "EqualizedLayer",
    "EqualizedLinear",
    "FromRGB",
    "MinibatchStdDev",
    "PixelNorm",
    "ToRGB",
    "UpscaleConv2d",
    "shared_scaled_weights",
]
