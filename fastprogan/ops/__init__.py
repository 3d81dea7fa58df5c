"""Functional ops: one file per op, each with its plain-PyTorch reference (``*_ref``, the oracle).

``impl="auto"`` runs the fast path for the tensor's device; ``"ref"`` the oracle; ``"triton"`` (epilogue
ops) or ``"fused"`` (resampling convs) force the fast path and raise if it cannot run.
"""

from fastprogan.ops.bias_act import bias_act, bias_act_ref
from fastprogan.ops.conv2d_bias_act import (
    conv2d_bias_act,
    conv2d_bias_act_ref,
    conv2d_downscale_bias_act,
    conv2d_downscale_bias_act_ref,
    upscale_conv2d_bias_act,
    upscale_conv2d_bias_act_ref,
)
from fastprogan.ops.conv2d_downscale import conv2d_downscale, conv2d_downscale_ref
from fastprogan.ops.minibatch_stddev import minibatch_stddev, minibatch_stddev_ref
from fastprogan.ops.pixel_norm import pixel_norm, pixel_norm_ref
from fastprogan.ops.upscale_conv2d import upscale_conv2d, upscale_conv2d_ref

__all__ = [
    "bias_act",
    "bias_act_ref",
    "conv2d_bias_act",
    "conv2d_bias_act_ref",
    "conv2d_downscale",
    "conv2d_downscale_bias_act",
    "conv2d_downscale_bias_act_ref",
    "conv2d_downscale_ref",
    "minibatch_stddev",
    "minibatch_stddev_ref",
    "pixel_norm",
    "pixel_norm_ref",
    "upscale_conv2d",
    "upscale_conv2d_bias_act",
    "upscale_conv2d_bias_act_ref",
    "upscale_conv2d_ref",
]
