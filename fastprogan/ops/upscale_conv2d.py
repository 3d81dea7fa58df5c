"""upscale_conv2d: nearest 2x upsampling followed by a 3x3 convolution (pad 1), fused.

Math: ``y = conv2d(upsample_nearest_2x(x), w, b, padding=1)`` with x [N, C_in, H, W], w [C_out, C_in,
3, 3] -> y [N, C_out, 2H, 2W]. The fused path computes it as one stride-2 transposed conv (cuDNN on a
GPU) with the 4x4 kernel of :mod:`fastprogan.ops.resample_weight`: 0.44x the FLOPs and no 4x-sized
upsampled intermediate. Layouts: NCHW or channels_last; dtypes fp32/fp16/bf16/fp64 (parameters are
cast to the activation dtype per call). Every derivative order (both paths are plain torch ops).

impl: "ref" = the unfused oracle (also a real path: nearest upsample + 3x3 conv), "fused" = the
4x4-kernel transposed conv, "auto" = the one :func:`upscale_path` picks: on CUDA the measured winner
from the device's dispatch table (:mod:`fastprogan.ops.dispatch_table`, written by ``fastprogan
bench``) when it has this shape; otherwise, on CPU "fused" once the batch
has N*H*W >= 512 input pixels, else "ref". Building the 4x4 weights is a fixed cost per call (one
GEMM, ~80 ms forward / ~300 ms forward+backward for 512x512 channels on 2 busy threads), and the
stride-2 transposed conv's own backward is slow on CPU at small batches, so the crossover is
measured: fused/ref forward+backward time, interleaved, 512 channels, 2 threads, median of 3 rounds
(``python benchmarks/bench_ops.py --thresholds --channels 512``): 1.18x at N*H*W = 128, 1.04x at 256,
0.87x at 512, 0.64x at 1024, 0.50x at 2048 and 4096 (with the previous box-filter-conv
construction: 3.3x at 128, 2.0x at 512, 1.0x at 2048, 0.62x at 4096, hence the old 4096); on CUDA without a table entry
the path with the lower roofline time estimate, max(bytes / bandwidth, FLOPs / peak), with the bytes from formulas fitted to
the traffic counter (``python -m fastprogan.tools.traffic``; tests/tools/test_traffic.py checks the
formulas against the counter). Building the 4x4 weights costs weight traffic on every call, so the
upsample path wins when there are few activations per weight (generation at batch 1, small images);
at ProGAN's training batches the fused path wins everywhere (docs/kernels.md has the numbers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastprogan.ops._conv_args import cast_params, check_resample_conv_args
from fastprogan.ops.dispatch_table import measured_conv_choice
from fastprogan.ops.resample_weight import upscale_conv_weight


def upscale_conv2d_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """The oracle: explicit nearest upsampling, then a padded 3x3 conv."""
    x = F.interpolate(x, scale_factor=2, mode="nearest")  # [N, C_in, 2H, 2W]
    return F.conv2d(x, weight, bias, padding=1)


def _upscale_conv2d_fused(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.conv_transpose2d(x, upscale_conv_weight(weight), bias, stride=2, padding=1)


# Elements moved, fitted with the traffic counter (exact): per input activation element
# (x = N*C_in*H*W), per output element (y = N*C_out*4*H*W) and per 3x3 weight element
# (w9 = 9*C_out*C_in). Forward / forward+backward; the weight terms include the 4x4-weight
# construction (the transposed copy, the shift-matrix GEMM) and its backward, plus a constant for
# the GEMM's reads of the memoized [9, 16] shift matrix (SHIFT_MATRIX_ELEMENTS, fused path only).
TRAFFIC_COEFFS = {
    # path: ((x, y, w9) forward, (x, y, w9) forward + backward)
    "fused": ((1.0, 1.0, 59 / 9), (3.0, 2.0, 161 / 9)),
    "ref": ((9.0, 1.0, 1.0), (22.0, 2.0, 3.0)),
}
PATHS = ("fused", "ref")  # the choices of impl="auto" (and of a dispatch table's entries)
SHIFT_MATRIX_ELEMENTS = (144, 288)  # forward (one read), forward + backward (and the grad GEMM's)
# CPU: the fused path wins once the batch has this many input pixels (module docstring: measurements).
CPU_FUSED_MIN_PIXELS = 512

MACS_PER_OUTPUT_TAP = {"fused": 4.0, "ref": 9.0}  # multiply-adds per (output pixel, C_in, C_out)
# Roofline constants of the reference GPU (H100 SXM): HBM bandwidth and sustained dense throughput of
# cuDNN convolutions (tensor cores for half precision; fp32 with TF32 off, as the precision policy asks).
GPU_BANDWIDTH = 3.35e12  # B/s
GPU_PEAK_FLOPS = {torch.float16: 4.0e14, torch.bfloat16: 4.0e14, torch.float32: 5.0e13}


def upscale_traffic(
    path: str, n: int, c_in: int, c_out: int, h: int, w: int, element_size: int, backward: bool
) -> float:
    """Estimated bytes moved by ``path`` ("fused" or "ref") for x [n, c_in, h, w] -> [n, c_out, 2h, 2w]."""
    cx, cy, cw = TRAFFIC_COEFFS[path][1 if backward else 0]
    const = SHIFT_MATRIX_ELEMENTS[1 if backward else 0] if path == "fused" else 0
    return element_size * (cx * n * c_in * h * w + cy * n * c_out * 4 * h * w + cw * 9 * c_in * c_out + const)


def upscale_path(
    n: int,
    c_in: int,
    c_out: int,
    h: int,
    w: int,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    backward: bool = True,
) -> str:
    """The path ``impl="auto"`` runs: "fused" (4x4 weights) or "ref" (upsample + 3x3 conv).

    ``device``: the tensor's device (or its type string). On CUDA the device's dispatch table decides
    when it holds this shape (op ``upscale_conv2d``, key ``shape_key(n, c_in, c_out, h, w, dtype,
    backward)``); otherwise the roofline estimate below.
    """
    device_type = device if isinstance(device, str) else device.type
    if device_type == "cuda":
        measured = measured_conv_choice(
            "upscale_conv2d", device, PATHS, n, c_in, c_out, h, w, dtype, backward
        )
        if measured is not None:
            return measured
    if device_type != "cuda":
        return "fused" if n * h * w >= CPU_FUSED_MIN_PIXELS else "ref"
    size = torch.empty((), dtype=dtype).element_size()
    peak = GPU_PEAK_FLOPS.get(dtype, GPU_PEAK_FLOPS[torch.float32])
    passes = 3 if backward else 1  # forward, input gradient, weight gradient

    def seconds(path: str) -> float:
        flops = 2 * passes * MACS_PER_OUTPUT_TAP[path] * n * 4 * h * w * c_in * c_out
        bytes_moved = upscale_traffic(path, n, c_in, c_out, h, w, size, backward)
        return max(bytes_moved / GPU_BANDWIDTH, flops / peak)

    return "fused" if seconds("fused") <= seconds("ref") else "ref"


def upscale_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, impl: str = "auto"
) -> torch.Tensor:
    """Nearest 2x upsample + 3x3 conv (pad 1). x [N, C_in, H, W] -> [N, C_out, 2H, 2W]."""
    check_resample_conv_args("upscale_conv2d", x, weight, bias, impl)
    if impl == "auto":
        backward = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        impl = upscale_path(*x.shape[:2], weight.shape[0], *x.shape[2:], x.device, x.dtype, backward)
    weight, bias = cast_params(x, weight, bias)
    if impl == "ref":
        return upscale_conv2d_ref(x, weight, bias)
    return _upscale_conv2d_fused(x, weight, bias)
