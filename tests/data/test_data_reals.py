"""prepare_reals (range, mirror) and fade_reals (endpoints against numpy)."""

from __future__ import annotations

import numpy as np
import torch

from fastprogan.data import fade_reals, prepare_reals
from fastprogan.data.reals import box_downscale2x


def _batch(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)


def test_range_and_dtype():
    b = _batch()
    b[0, 0, 0, :3] = torch.tensor([0, 255, 128], dtype=torch.uint8)
    x = prepare_reals(b, "cpu")
    assert x.dtype == torch.float32 and x.shape == b.shape
    assert x[0, 0, 0, :2].tolist() == [-1.0, 1.0]  # exact endpoints
    assert abs(x[0, 0, 0, 2].item() - (128 / 127.5 - 1)) < 1e-6
    torch.testing.assert_close(x, b.double().div(127.5).sub(1).float())
    assert prepare_reals(b, "cpu", dtype=torch.float64).dtype == torch.float64


def test_no_mirror_unless_asked():
    b = _batch()
    x = prepare_reals(b, "cpu", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, b.float() / 127.5 - 1)


def test_mirror_flips_a_reproducible_random_subset():
    b = _batch(n=64)
    plain = prepare_reals(b, "cpu")
    x = prepare_reals(b, "cpu", mirror=True, generator=torch.Generator().manual_seed(3))
    coins = torch.rand(64, generator=torch.Generator().manual_seed(3)) < 0.5
    flipped = torch.tensor([torch.equal(x[i], plain[i].flip(-1)) for i in range(64)])
    same = torch.tensor([torch.equal(x[i], plain[i]) for i in range(64)])
    assert torch.equal(flipped, coins) and torch.equal(same, ~coins)
    assert 10 < int(coins.sum()) < 54
    y = prepare_reals(b, "cpu", mirror=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x, y)


def _numpy_down_up(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    small = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    return small.repeat(2, axis=2).repeat(2, axis=3)


def test_fade_endpoints_and_middle():
    x = prepare_reals(_batch(), "cpu")
    assert torch.equal(fade_reals(x, 1.0), x)
    assert torch.equal(fade_reals(x, torch.tensor(1.0)), x)
    coarse = fade_reals(x, 0.0)
    assert coarse.shape == x.shape
    np.testing.assert_allclose(coarse.numpy(), _numpy_down_up(x.double().numpy()), atol=1e-6)
    assert not torch.allclose(coarse, x)
    mid = fade_reals(x, 0.25)
    np.testing.assert_allclose(mid.numpy(), (coarse + 0.25 * (x - coarse)).numpy(), atol=1e-6)


def test_box_downscale_matches_the_pyramid_builder():
    from fastprogan.data.pyramid import box_downscale2x as np_box

    x = _batch().float()
    np.testing.assert_array_equal(box_downscale2x(x).numpy(), np_box(x.numpy()))
