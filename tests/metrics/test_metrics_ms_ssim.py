"""SSIM against scikit-image and MS-SSIM against pytorch-msssim on real sample images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastprogan.metrics import ms_ssim, ssim
from fastprogan.metrics.ms_ssim import _ssim_and_cs

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (test extra) provides sample images")


def gray(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).float()[None, None]  # [1, 1, H, W]


def rgb(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).float().permute(2, 0, 1)[None]  # [1, 3, H, W]


def gray_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """256x256 grayscale pairs from skimage's camera image (float64 on 0..255)."""
    cam = skimage_data.camera().astype(np.float64)  # [512, 512]
    a = cam[:256, :256]
    noise = np.random.default_rng(0).normal(0, 12, a.shape)
    return [
        (a, np.clip(a + noise, 0, 255)),  # noisy copy
        (a, 0.7 * a + 0.3 * cam[256:, 256:]),  # blend with another region
        (a, cam[4:260, 6:262]),  # small shift
        (cam[100:356, 200:456], np.round(cam[100:356, 200:456] / 32) * 32),  # quantised
    ]


@pytest.mark.parametrize("index", range(4))
def test_ssim_matches_skimage_grayscale(index: int) -> None:
    metrics = pytest.importorskip("skimage.metrics", reason="scikit-image (test extra) is the SSIM oracle")
    a, b = gray_pairs()[index]
    ref = metrics.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(gray(a), gray(b)).item() == pytest.approx(ref, abs=1e-4)


def test_ssim_matches_skimage_rgb_and_uint8() -> None:
    metrics = pytest.importorskip("skimage.metrics", reason="scikit-image (test extra) is the SSIM oracle")
    astro, coffee = skimage_data.astronaut(), skimage_data.coffee()
    pairs = [(astro[:200, :200], astro[150:350, 200:400]), (coffee[:120, :150], coffee[:120, 3:153])]
    for a, b in pairs:
        # skimage averages per-channel SSIM; our map mean over H, W, C is the same number.
        ref = metrics.structural_similarity(
            a.astype(np.float64),
            b.astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=2,
        )
        as_uint8 = ssim(rgb(a).to(torch.uint8), rgb(b).to(torch.uint8)).item()
        assert as_uint8 == pytest.approx(ref, abs=1e-4)


def test_ssim_is_batched_per_pair() -> None:
    pairs = gray_pairs()
    a = torch.cat([gray(p[0]) for p in pairs])
    b = torch.cat([gray(p[1]) for p in pairs])
    batched = ssim(a, b)
    assert batched.shape == (4,)
    single = torch.stack([ssim(gray(p[0]), gray(p[1]))[0] for p in pairs])
    torch.testing.assert_close(batched, single)


def test_ms_ssim_matches_pytorch_msssim_on_positive_contrast_pairs() -> None:
    oracle = pytest.importorskip("pytorch_msssim", reason="pytorch-msssim (test extra) is the MS-SSIM oracle")
    pairs = gray_pairs()
    a = torch.cat([gray(p[0]) for p in pairs])  # [4, 1, 256, 256]
    b = torch.cat([gray(p[1]) for p in pairs])
    # Precondition of the comparison: every contrast term positive, so clipping order cannot matter.
    x, y = a.clone(), b.clone()
    for _ in range(5):
        assert (_ssim_and_cs(x, y, 11, 1.5, 255.0)[1] > 0).all()
        x, y = torch.nn.functional.avg_pool2d(x, 2), torch.nn.functional.avg_pool2d(y, 2)
    ref = oracle.ms_ssim(a, b, data_range=255, size_average=False)  # win 11, sigma 1.5, K (0.01, 0.03)
    torch.testing.assert_close(ms_ssim(a, b), ref, atol=1e-4, rtol=0)


def test_ms_ssim_identical_is_one_and_inverted_is_zero() -> None:
    a = gray(skimage_data.camera()[:256, :256].astype(np.float64))
    assert ms_ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)
    # An inverted image has negative covariance at every scale: the clip rule gives exactly 0.
    assert ms_ssim(a, 255 - a).item() == 0.0
    # uint8 input is accepted as is.
    assert ms_ssim(a.to(torch.uint8), a.to(torch.uint8)).item() == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_small_images_shrink_the_window() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 3, 32, 32), generator=gen, dtype=torch.uint8)
    b = (a.int() + torch.randint(-20, 21, a.shape, generator=gen)).clamp(0, 255).to(torch.uint8)
    score = ms_ssim(a, b)  # last scale is 2x2: the window shrinks to 2x2 with sigma 1.5 * 2 / 11
    assert score.shape == (3,)
    assert torch.isfinite(score).all()
    assert ((score > 0) & (score < 1)).all()
    assert ms_ssim(a, a) == pytest.approx(torch.ones(3), abs=1e-6)
