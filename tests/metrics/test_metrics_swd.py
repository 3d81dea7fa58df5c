"""SWD: pyramid against OpenCV, exact reconstruction, properties, and a numpy/scipy re-implementation."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

from fastprogan.metrics import (
    SlicedWassersteinDistance,
    laplacian_pyramid,
    sliced_wasserstein_distance,
    to_uint8,
)
from fastprogan.metrics.swd import (
    _stable_seed,
    num_pyramid_levels,
    pyr_down,
    pyr_up,
    sliced_w1,
)

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (test extra) provides sample images")


def sample_batch(size: int = 128) -> torch.Tensor:
    """Four real photographs cropped to size x size, uint8 [4, 3, size, size]."""
    astro = skimage_data.astronaut()  # [512, 512, 3]
    coffee = skimage_data.coffee()  # [400, 600, 3]
    crops = [astro[:size, :size], astro[200 : 200 + size, 150 : 150 + size], coffee[:size, 100 : 100 + size]]
    crops.append(coffee[-size:, -size:])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def test_level_count_matches_paper() -> None:
    assert num_pyramid_levels(1024, 1024) == 7
    assert num_pyramid_levels(128, 128) == 4
    assert num_pyramid_levels(16, 16) == 1
    assert [p.shape[-1] for p in laplacian_pyramid(sample_batch(128))] == [128, 64, 32, 16]


def test_pyramid_reconstructs_exactly() -> None:
    images = sample_batch(128)
    pyramid = laplacian_pyramid(images)
    assert all(level.dtype == torch.float32 for level in pyramid)
    recon = pyramid[-1]
    for level in reversed(pyramid[:-1]):
        recon = pyr_up(recon) + level
    torch.testing.assert_close(recon, images.float(), atol=1e-3, rtol=0)


def test_pyramid_matches_opencv() -> None:
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (test extra) is the pyramid oracle")
    images = sample_batch(128)
    img = images[1].permute(1, 2, 0).numpy().astype(np.float32)  # [H, W, 3] on 0..255
    # OpenCV's own Laplacian pyramid with mirror borders that skip the edge pixel.
    gauss = [img]
    for _ in range(3):
        gauss.append(cv2.pyrDown(gauss[-1], borderType=cv2.BORDER_REFLECT_101))
    ref = [g - cv2.pyrUp(gn, borderType=cv2.BORDER_REFLECT_101) for g, gn in pairwise(gauss)]
    ref.append(gauss[-1])
    ours = [level[1].permute(1, 2, 0).numpy() for level in laplacian_pyramid(images)]
    for r, o in zip(ref, ours):
        # Border handling of pyrUp may differ on the last row/column; compare the interior.
        np.testing.assert_allclose(o[2:-2, 2:-2], r[2:-2, 2:-2], atol=2e-3)
    # pyrDown's mirror border is the same as ours, so it must agree everywhere.
    np.testing.assert_allclose(pyr_down(images[1:2].float())[0].permute(1, 2, 0).numpy(), gauss[1], atol=1e-4)


def test_a_set_against_itself_is_zero_and_distance_is_symmetric() -> None:
    images = sample_batch(32)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randint(0, 256, (4, 3, 32, 32), generator=gen, dtype=torch.uint8)
    swd = SlicedWassersteinDistance(seed=3)
    swd.add("a", images)
    swd.add("b", noise)
    same = swd.compute("a", "a")  # the reals-vs-same-reals row reuses the set's own descriptors
    assert set(same) == {"32", "16", "mean"}
    assert all(v == 0.0 for v in same.values())
    ab, ba = swd.compute("a", "b"), swd.compute("b", "a")
    assert ab == pytest.approx(ba, rel=1e-6)
    assert ab["mean"] > 0


def test_positions_are_drawn_independently_per_set() -> None:
    # The same images fed as reals and as fakes: with one shared sequence of centres the descriptors
    # (and so SWD) would be identical; the protocol draws each set's positions independently.
    images = sample_batch(32)
    swd = SlicedWassersteinDistance(seed=3)
    swd.add_reals(images)
    swd.add_fakes(images.clone())
    for level_reals, level_fakes in zip(swd._levels["reals"], swd._levels["fakes"]):
        assert not torch.equal(level_reals.descriptors(), level_fakes.descriptors())
    copy = swd.compute("reals", "fakes")
    assert all(v > 0 for v in copy.values())
    # ...but only sampling noise apart: far below the distance to unrelated noise images.
    noise = torch.randint(0, 256, images.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert copy["mean"] < 0.5 * sliced_wasserstein_distance(images, noise, seed=3)["mean"]


def test_positions_do_not_depend_on_what_other_sets_hold() -> None:
    # A set's centres come from (seed, its name) only: feeding other sets first changes nothing.
    reals, fakes = sample_batch(32), torch.flip(sample_batch(32), dims=[3])
    alone = SlicedWassersteinDistance(seed=4)
    alone.add_reals(reals)
    alone.add_fakes(fakes)
    crowded = SlicedWassersteinDistance(seed=4)
    crowded.add("reals_floor", fakes)
    crowded.add_fakes(fakes)
    crowded.add_reals(reals)
    assert alone.compute() == crowded.compute()


def test_grayscale_is_tiled_to_rgb() -> None:
    gray = torch.from_numpy(skimage_data.camera()[:32, :64].reshape(2, 1, 32, 32).copy())
    other = torch.flip(gray, dims=[3])
    a = sliced_wasserstein_distance(gray, other, seed=5)
    b = sliced_wasserstein_distance(gray.expand(-1, 3, -1, -1), other.expand(-1, 3, -1, -1), seed=5)
    assert a == b


def test_invariant_to_brightness_and_contrast_of_a_whole_set() -> None:
    # Step 3 normalises each set per channel, so an affine change of one whole set cancels exactly
    # in the band-pass levels and the low-pass level alike (same draws: same seed and set names).
    reals = sample_batch(32) // 2 + 20  # values 20..147 so the changes below stay in range
    fakes = torch.flip(reals, dims=[2])
    base = sliced_wasserstein_distance(reals, fakes, seed=7)
    shifted = sliced_wasserstein_distance(reals, fakes + 40, seed=7)
    stretched = sliced_wasserstein_distance(reals, fakes * 2 - 30, seed=7)
    for key in base:
        assert shifted[key] == pytest.approx(base[key], rel=1e-4)
        assert stretched[key] == pytest.approx(base[key], rel=1e-4)


def test_distance_orders_by_dissimilarity() -> None:
    reals = sample_batch(32)
    gen = torch.Generator().manual_seed(0)
    slightly = (reals.int() + torch.randint(-8, 9, reals.shape, generator=gen)).clamp(0, 255).to(torch.uint8)
    noise = torch.randint(0, 256, reals.shape, generator=gen, dtype=torch.uint8)
    near = sliced_wasserstein_distance(reals, slightly, seed=2)["mean"]
    far = sliced_wasserstein_distance(reals, noise, seed=2)["mean"]
    assert 0 < near < far


def test_deterministic_per_seed() -> None:
    reals, fakes = sample_batch(32), torch.flip(sample_batch(32), dims=[3])
    assert sliced_wasserstein_distance(reals, fakes, seed=1) == sliced_wasserstein_distance(
        reals, fakes, seed=1
    )
    assert sliced_wasserstein_distance(reals, fakes, seed=1) != sliced_wasserstein_distance(
        reals, fakes, seed=2
    )


def test_rejects_unequal_sets_and_float_input() -> None:
    swd = SlicedWassersteinDistance()
    with pytest.raises(TypeError):
        swd.add_reals(torch.zeros(1, 3, 16, 16))
    swd.add_reals(sample_batch(16))
    swd.add_fakes(sample_batch(16)[:2])
    with pytest.raises(ValueError, match="equal"):
        swd.compute()


def test_sliced_w1_is_mean_abs_difference_of_sorted_projections() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 6, generator=gen), torch.randn(500, 6, generator=gen) * 2
    dirs = torch.randn(6, 9, generator=gen)
    dirs /= dirs.norm(dim=0, keepdim=True)
    pa, pb = (a @ dirs).numpy(), (b @ dirs).numpy()
    ref = np.abs(np.sort(pa, axis=0) - np.sort(pb, axis=0)).mean()
    assert sliced_w1(a, b, dirs) == pytest.approx(ref, rel=1e-6)


def _reference_swd(reals: np.ndarray, fakes: np.ndarray, seed: int) -> dict[str, float]:
    """Steps 1-5 written directly in numpy/scipy (scipy.ndimage 'mirror' = reflect-101 borders).

    Only the random draws come from the same torch generators as the implementation, so the two
    must agree to float rounding.
    """
    ndimage = pytest.importorskip("scipy.ndimage", reason="scipy (test extra) is the convolution oracle")
    k1 = np.array([1, 4, 6, 4, 1], np.float64)
    kernel = (np.outer(k1, k1) / 256.0)[None, None]

    def pyramid(x: np.ndarray) -> list[np.ndarray]:
        levels = [x.astype(np.float64)]
        while levels[-1].shape[-1] > 16:
            down = ndimage.convolve(levels[-1], kernel, mode="mirror")[:, :, ::2, ::2]
            up = np.zeros_like(levels[-1])
            up[:, :, ::2, ::2] = down
            levels[-1] = levels[-1] - ndimage.convolve(up, kernel * 4, mode="mirror")
            levels.append(down)
        return levels

    def descriptors(x: np.ndarray, name: str) -> list[np.ndarray]:
        gen = torch.Generator().manual_seed(_stable_seed("swd-nhoods", seed, name))  # per-set positions
        out = []
        for level in pyramid(x):
            n, _, h, w = level.shape
            cx = torch.randint(3, w - 3, (n, 128), generator=gen).numpy()
            cy = torch.randint(3, h - 3, (n, 128), generator=gen).numpy()
            patches = np.stack(
                [
                    level[i, :, cy[i, j] - 3 : cy[i, j] + 4, cx[i, j] - 3 : cx[i, j] + 4]
                    for i in range(n)
                    for j in range(128)
                ]
            )  # [n * 128, 3, 7, 7]
            patches = (patches - patches.mean(axis=(0, 2, 3), keepdims=True)) / patches.std(
                axis=(0, 2, 3), keepdims=True
            )
            out.append(patches.reshape(len(patches), -1))
        return out

    da, db = descriptors(reals, "reals"), descriptors(fakes, "fakes")
    result = {}
    for index, (a, b) in enumerate(zip(da, db)):
        gen = torch.Generator().manual_seed(_stable_seed("swd-dirs", seed, index))
        dists = []
        for _ in range(4):
            dirs = torch.randn(147, 128, generator=gen).double().numpy()
            dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
            dists.append(np.abs(np.sort(a @ dirs, axis=0) - np.sort(b @ dirs, axis=0)).mean())
        result[str(a.shape[0] and 2 ** (4 + len(da) - 1 - index))] = float(np.mean(dists)) * 1e3
    result["mean"] = float(np.mean(list(result.values())))
    return result


def test_matches_direct_numpy_scipy_implementation() -> None:
    reals = sample_batch(64)
    fakes = to_uint8(torch.tanh(torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))))
    ours = sliced_wasserstein_distance(reals, fakes, seed=11)
    ref = _reference_swd(reals.numpy(), fakes.numpy(), seed=11)
    assert list(ours) == ["64", "32", "16", "mean"]
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], rel=1e-4)


def test_flat_images_give_finite_values() -> None:
    # Band-pass levels of constant images are all zero (std 0); normalisation must not produce NaN.
    flat = torch.full((2, 3, 32, 32), 90, dtype=torch.uint8)
    result = sliced_wasserstein_distance(flat, sample_batch(32)[:2], seed=0)
    assert all(np.isfinite(v) for v in result.values())
    # Every neighbourhood of a flat image is the same, wherever it is drawn: 0 between two copies.
    assert sliced_wasserstein_distance(flat, flat.clone())["mean"] == 0.0
