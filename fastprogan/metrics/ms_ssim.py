"""SSIM and multi-scale SSIM (Wang et al. 2003) as the ProGAN paper uses them to measure diversity.

MS-SSIM protocol: 5 scales weighted [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]; 11x11 Gaussian window,
sigma 1.5 (shrunk to min(11, H, W) with sigma scaled alike); K1 = 0.01, K2 = 0.03, max value 255;
valid convolution; SSIM and contrast maps averaged over H, W and channels per image; 2x2 box average
between scales; negative values clipped to 0; score = prod_{s<5} cs_s**w_s * ssim_5**w_5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastprogan.metrics._filters import gaussian_kernel, separable_filter, shrunk_gaussian

MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03
MAX_VALUE = 255.0


def _ssim_and_cs(
    a: torch.Tensor, b: torch.Tensor, window_size: int, sigma: float, max_value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image (valid convolution): two tensors [N]."""
    _, c, h, w = a.shape
    size, sigma = shrunk_gaussian(window_size, sigma, h, w)
    taps = gaussian_kernel(size, sigma, device=a.device)
    # Shift by 128 before squaring: the variances are differences of large second moments, and
    # centring the values keeps float32 cancellation ~4x smaller. Means are shifted back below.
    a = a - 128.0
    b = b - 128.0
    stats = separable_filter(torch.cat([a, b, a * a, b * b, a * b], dim=1), taps)  # [N, 5C, H', W']
    mu_a, mu_b, ea2, eb2, eab = stats.split(c, dim=1)
    var_a = ea2 - mu_a * mu_a
    var_b = eb2 - mu_b * mu_b
    cov = eab - mu_a * mu_b
    mu_a = mu_a + 128.0
    mu_b = mu_b + 128.0
    c1 = (K1 * max_value) ** 2
    c2 = (K2 * max_value) ** 2
    cs_map = (2.0 * cov + c2) / (var_a + var_b + c2)  # [N, C, H', W']
    ssim_map = (2.0 * mu_a * mu_b + c1) / (mu_a * mu_a + mu_b * mu_b + c1) * cs_map
    return ssim_map.mean(dim=(1, 2, 3)), cs_map.mean(dim=(1, 2, 3))


def _as_float(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(x.shape)}")
    return x.float() if x.dtype in (torch.uint8, torch.float16, torch.bfloat16) else x


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    window_size: int = WINDOW_SIZE,
    sigma: float = WINDOW_SIGMA,
    max_value: float = MAX_VALUE,
) -> torch.Tensor:
    """Single-scale SSIM per pair: a, b [N, C, H, W] on 0..max_value -> [N] (the per-scale term of MS-SSIM).

    Gaussian window (shrunk for small images), valid convolution, population statistics; the map
    is averaged over H, W and channels. Not clipped (clipping is part of the MS-SSIM combination).
    """
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    return _ssim_and_cs(_as_float(a), _as_float(b), window_size, sigma, max_value)[0]


def ms_ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    window_size: int = WINDOW_SIZE,
    sigma: float = WINDOW_SIGMA,
    max_value: float = MAX_VALUE,
) -> torch.Tensor:
    """Multi-scale SSIM per pair: a, b [N, C, H, W] (uint8 or float on 0..255) -> [N] float32 (MS-SSIM protocol).

    Per scale, SSIM and cs are averaged per image over H, W and channels and clipped at 0; between
    scales both images are 2x2 box-averaged (an odd trailing row/column is dropped). The score is
    prod over the first len(weights)-1 scales of cs**w times ssim**w at the last. A pair with any
    negative averaged term scores 0.
    """
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = _as_float(a), _as_float(b)
    score = torch.ones(a.shape[0], dtype=torch.float32, device=a.device)  # [N]
    for index, weight in enumerate(weights):
        ssim_val, cs_val = _ssim_and_cs(a, b, window_size, sigma, max_value)
        last = index == len(weights) - 1
        term = (ssim_val if last else cs_val).clamp(min=0.0)
        score = score * term.float() ** weight
        if not last:
            if min(a.shape[2], a.shape[3]) < 2:
                raise ValueError(f"images too small for {len(weights)} MS-SSIM scales")
            a = F.avg_pool2d(a, kernel_size=2)  # [N, C, H/2, W/2]
            b = F.avg_pool2d(b, kernel_size=2)
    return score
