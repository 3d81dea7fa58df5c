"""conv2d_downscale: a 3x3 convolution (pad 1) followed by 2x2 average pooling, fused.

Math: ``y = avg_pool2d(conv2d(x, w, b, padding=1), 2)`` with x [N, C_in, H, W] (H, W even), w [C_out,
C_in, 3, 3] -> y [N, C_out, H/2, W/2]. The fused path is one stride-2 conv (cuDNN on a GPU) with the
4x4 kernel x0.25 of :mod:`fastprogan.ops.resample_weight`: 0.44x the FLOPs, no full-resolution
intermediate. The bias commutes with the pooling. Layouts: NCHW or channels_last. All derivative
orders (needed for the WGAN-GP penalty in D).

impl: "ref" = the unfused oracle, "fused" = the stride-2 conv, "auto" = :func:`downscale_path`: "fused"
on CUDA; on CPU "fused" once the batch has N*H*W >= 2048 input pixels, else "ref" (building the 4x4
weights is a fixed cost per call, one GEMM of ~80 ms forward / ~300 ms forward+backward for 512x512
channels on 2 busy threads, while the conv's cost scales with N*H*W: fused/ref forward+backward time,
interleaved, 512 channels, 2 threads, median of 3 rounds, ``python benchmarks/bench_ops.py
--thresholds --channels 512``: 1.25x at N*H*W = 128, 1.28x at 256, 1.20x at 512, 0.99x at 1024,
0.64x at 2048, 0.76x at 4096; with the previous box-filter-conv construction: 6-7x at 512, 2.2x at
2048, 1.0-1.5x at 8192, 0.52-0.78x at 16384, hence the old 16384).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastprogan.ops._conv_args import cast_params, check_resample_conv_args
from fastprogan.ops.resample_weight import downscale_conv_weight


def conv2d_downscale_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """The oracle: a padded 3x3 conv, then 2x2 average pooling."""
    return F.avg_pool2d(F.conv2d(x, weight, bias, padding=1), 2)


def _conv2d_downscale_fused(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.conv2d(x, downscale_conv_weight(weight), bias, stride=2, padding=1)


# CPU: the fused path wins once the batch has this many input pixels (module docstring: measurements).
CPU_FUSED_MIN_PIXELS = 2048


def downscale_path(n: int, h: int, w: int, device_type: str) -> str:
    """The path ``impl="auto"`` runs for x [n, C, h, w]: "fused" (4x4 weights) or "ref" (conv + pool)."""
    if device_type == "cuda":
        return "fused"
    return "fused" if n * h * w >= CPU_FUSED_MIN_PIXELS else "ref"


def conv2d_downscale(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, impl: str = "auto"
) -> torch.Tensor:
    """3x3 conv (pad 1) + 2x2 average pool. x [N, C_in, H, W] -> [N, C_out, H/2, W/2]."""
    check_resample_conv_args("conv2d_downscale", x, weight, bias, impl)
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"conv2d_downscale: x needs an even height and width, got {tuple(x.shape[2:])}")
    if impl == "auto":
        impl = downscale_path(x.shape[0], x.shape[2], x.shape[3], x.device.type)
    weight, bias = cast_params(x, weight, bias)
    if impl == "ref":
        return conv2d_downscale_ref(x, weight, bias)
    return _conv2d_downscale_fused(x, weight, bias)
