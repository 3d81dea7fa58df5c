"""The fused-resampling weight: a 3x3 kernel turned into the 4x4 kernel of a stride-2 conv.

Nearest 2x upsampling followed by a 3x3 conv (pad 1) equals one stride-2 transposed conv whose 4x4
kernel is the sum of the 3x3 kernel zero-padded to 5x5 and taken at its four 4x4 shifts; a 3x3 conv
followed by 2x2 average pooling equals one stride-2 conv with the same sum times 0.25. Both do 16
instead of 36 multiply-adds per (input pixel x channel pair): 0.44x the FLOPs.

The 4-shift sum is a 2x2 box filter over the zero-padded kernel, so it is built with one conv2d (one
read of the 3x3 weights, one write of the 4x4), which keeps every derivative order available.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def four_shift_sum(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """[C_out, C_in, 3, 3] -> [C_out, C_in, 4, 4]: ``scale`` x the sum of the padded kernel's 4 shifts."""
    c_out, c_in, kh, kw = weight.shape
    box = torch.full((1, 1, 2, 2), scale, dtype=weight.dtype, device=weight.device)
    w = weight.reshape(c_out * c_in, 1, kh, kw)
    return F.conv2d(w, box, padding=1).reshape(c_out, c_in, kh + 1, kw + 1)


def upscale_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """3x3 conv weight [C_out, C_in, 3, 3] -> conv_transpose2d weight [C_in, C_out, 4, 4].

    PyTorch's transposed conv correlates with the spatially flipped kernel, so the 3x3 kernel is
    flipped first (the box filter is symmetric, so flipping before or after the sum is the same).
    """
    return four_shift_sum(weight.flip((2, 3))).transpose(0, 1)


def downscale_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """3x3 conv weight [C_out, C_in, 3, 3] -> stride-2 conv2d weight [C_out, C_in, 4, 4] (x0.25)."""
    return four_shift_sum(weight, 0.25)
