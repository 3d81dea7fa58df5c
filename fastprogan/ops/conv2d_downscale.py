"""conv2d_downscale: a 3x3 convolution (pad 1) followed by 2x2 average pooling, fused.

Math: ``y = avg_pool2d(conv2d(x, w, b, padding=1), 2)`` with x [N, C_in, H, W] (H, W even), w [C_out,
C_in, 3, 3] -> y [N, C_out, H/2, W/2]. The fused path is one stride-2 conv (cuDNN on a GPU) with the
4x4 kernel x0.25 of :mod:`fastprogan.ops.resample_weight`: 0.44x the FLOPs, no full-resolution
intermediate. The bias commutes with the pooling. Layouts: NCHW or channels_last. All derivative
orders (needed for the WGAN-GP penalty in D).

impl: "ref" = the unfused oracle, "fused" = the stride-2 conv, "auto" = :func:`downscale_path`: on CUDA
the measured winner from the device's dispatch table (:mod:`fastprogan.ops.dispatch_table`, written by
``fastprogan bench``) when it has this shape, else "fused"; on CPU "fused" once the batch has N*H*W >= 2048 input pixels, else "ref" (building the 4x4
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
from fastprogan.ops.dispatch_table import measured_conv_choice
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
PATHS = ("fused", "ref")  # the choices of impl="auto" (and of a dispatch table's entries)


def downscale_path(
    n: int,
    h: int,
    w: int,
    device: torch.device | str,
    c_in: int | None = None,
    c_out: int | None = None,
    dtype: torch.dtype = torch.float32,
    backward: bool = True,
) -> str:
    """The path ``impl="auto"`` runs for x [n, c_in, h, w]: "fused" (4x4 weights) or "ref" (conv + pool).

    ``device``: the tensor's device (or its type string). On CUDA the device's dispatch table decides
    when it holds this shape (op ``conv2d_downscale``, key ``shape_key(n, c_in, c_out, h, w, dtype,
    backward)``; needs the channel counts), else "fused".
    """
    device_type = device if isinstance(device, str) else device.type
    if device_type == "cuda":
        measured = None
        if c_in is not None and c_out is not None:
            measured = measured_conv_choice(
                "conv2d_downscale", device, PATHS, n, c_in, c_out, h, w, dtype, backward
            )
        return measured or "fused"
    return "fused" if n * h * w >= CPU_FUSED_MIN_PIXELS else "ref"


def conv2d_downscale(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, impl: str = "auto"
) -> torch.Tensor:
    """3x3 conv (pad 1) + 2x2 average pool. x [N, C_in, H, W] -> [N, C_out, H/2, W/2]."""
    check_resample_conv_args("conv2d_downscale", x, weight, bias, impl)
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"conv2d_downscale: x needs an even height and width, got {tuple(x.shape[2:])}")
    if impl == "auto":
        backward = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        n, c_in, h, w = x.shape
        impl = downscale_path(n, h, w, x.device, c_in, weight.shape[0], x.dtype, backward)
    weight, bias = cast_params(x, weight, bias)
    if impl == "ref":
        return conv2d_downscale_ref(x, weight, bias)
    return _conv2d_downscale_fused(x, weight, bias)
