"""Argument checks shared by the 3x3 conv ops (the fused-resampling convs and the fused Triton convs)."""

from __future__ import annotations

import torch

from fastprogan.ops._common import check_channels, check_same_device, check_tensor

CONV_IMPLS = ("auto", "ref", "fused")


def check_resample_conv_args(
    op: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, impl: str
) -> None:
    if impl not in CONV_IMPLS:
        raise ValueError(f"{op}: impl must be one of {CONV_IMPLS}, got {impl!r}")
    check_conv3x3_args(op, x, weight, bias)


def check_conv3x3_args(op: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """TypeError/ValueError naming the argument unless x [N, C_in, H, W], weight [C_out, C_in, 3, 3]
    and bias [C_out] (or None) fit together on one device."""
    check_tensor("x", x)
    check_tensor("weight", weight)
    if tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"{op}: weight must be [C_out, C_in, 3, 3], got {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{op}: x has {x.shape[1]} channels but weight expects C_in={weight.shape[1]} "
            f"(weight shape {tuple(weight.shape)})"
        )
    if bias is not None:
        check_tensor("bias", bias, ndims=(1,))
        check_channels("bias", bias, weight.shape[0], "one per output channel")
    check_same_device(x=x, weight=weight, bias=bias)


def cast_params(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Parameters stay fp32 in the module and are cast per call to the activation dtype."""
    return weight.to(x.dtype), None if bias is None else bias.to(x.dtype)
