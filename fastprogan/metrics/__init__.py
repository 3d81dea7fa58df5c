"""Evaluation metrics of the ProGAN paper: SWD, MS-SSIM and FID, plus the shared evaluate() loop."""

from fastprogan.metrics.convert import tile_rgb, to_uint8
from fastprogan.metrics.evaluate import evaluate
from fastprogan.metrics.fid import (
    GaussianFit,
    InceptionFeatures,
    find_inception,
    frechet_distance,
    load_inception,
)
from fastprogan.metrics.ms_ssim import ms_ssim, ssim
from fastprogan.metrics.swd import (
    SlicedWassersteinDistance,
    laplacian_pyramid,
    sliced_wasserstein_distance,
)

__all__ = [
    "GaussianFit",
    "InceptionFeatures",
    "SlicedWassersteinDistance",
    "evaluate",
    "find_inception",
    "frechet_distance",
    "laplacian_pyramid",
    "load_inception",
    "ms_ssim",
    "sliced_wasserstein_distance",
    "ssim",
    "tile_rgb",
    "to_uint8",
]
