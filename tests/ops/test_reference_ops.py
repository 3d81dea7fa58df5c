"""The reference (oracle) ops: official semantics, precision policy, and all derivative orders."""

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from fastprogan import ops


def test_minibatch_stddev_official_semantics_numpy():
    """Independent numpy computation: strided groups (n mod M), biased var, sqrt(var + 1e-8)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 5, 3, 2)).astype(np.float32)
    y = ops.minibatch_stddev(torch.from_numpy(x), group_size=4).numpy()
    assert y.shape == (12, 6, 3, 2)
    np.testing.assert_array_equal(y[:, :5], x)
    m = 12 // 4
    for n in range(12):
        members = x[[n % m + k * m for k in range(4)]]  # the strided group of sample n
        std = np.sqrt(((members - members.mean(0)) ** 2).mean(0) + 1e-8).mean()
        np.testing.assert_allclose(y[n, 5], np.full((3, 2), std), rtol=1e-5)


def test_minibatch_stddev_group_clamped_to_batch():
    x = torch.randn(3, 2, 4, 4)
    y = ops.minibatch_stddev(x, group_size=4)  # G = min(4, 3) = 3: one group of the whole batch
    expect = x.std(0, unbiased=False).add(0).square().add(1e-8).sqrt().mean()
    torch.testing.assert_close(y[:, 2], expect.expand(3, 4, 4))


def test_minibatch_stddev_bad_batch_names_n_and_group():
    with pytest.raises(ValueError, match=r"N=6 .*group_size=4"):
        ops.minibatch_stddev(torch.randn(6, 2, 4, 4), group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        ops.minibatch_stddev(torch.randn(4, 2, 4, 4), group_size=0)


def test_pixel_norm_unit_rms_and_half_precision_reduction():
    x = torch.randn(4, 17, 5, 7) * 3
    y = ops.pixel_norm(x)
    torch.testing.assert_close(y.square().mean(1), torch.ones(4, 5, 7), rtol=1e-5, atol=1e-5)
    # 3e-4**2 = 9e-8 is a subnormal in fp16 and eps 1e-8 underflows to 0 there: reduce in fp32.
    tiny = torch.full((2, 8, 3, 3), 3e-4, dtype=torch.float16)
    yt = ops.pixel_norm(tiny)
    assert yt.dtype == torch.float16
    t64 = tiny.double()
    expect = t64 / (t64.square() + 1e-8).sqrt()  # about 0.949
    torch.testing.assert_close(yt.double(), expect, rtol=2e-3, atol=0)
    naive = tiny * torch.rsqrt(tiny.square().mean(1, keepdim=True) + 1e-8)  # all-fp16 arithmetic
    assert (naive.double() - expect).abs().max() > 0.02  # the policy matters at this input


def test_bias_act_matches_composition():
    x, b = torch.randn(3, 6, 5, 7), torch.randn(6)
    y = ops.bias_act(x, b, 0.2, pixel_norm=True)
    z = torch.nn.functional.leaky_relu(x + b[:, None, None], 0.2)
    torch.testing.assert_close(y, z / z.square().mean(1, keepdim=True).add(1e-8).sqrt())
    torch.testing.assert_close(ops.bias_act(x, None, 1.0), x)  # linear, no bias: identity
    y2 = ops.bias_act(torch.randn(4, 6), b)  # dense layers: [N, C]
    assert y2.shape == (4, 6)


def _f64(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("pn", [False, True])
def test_bias_act_ref_gradcheck(pn):
    x, b = _f64(2, 5, 3, 3), _f64(5)
    assert gradcheck(lambda x, b: ops.bias_act(x, b, 0.2, pn, impl="ref"), (x, b))
    assert gradgradcheck(lambda x, b: ops.bias_act(x, b, 0.2, pn, impl="ref"), (x, b))


def test_pixel_norm_and_minibatch_stddev_gradcheck():
    assert gradcheck(ops.pixel_norm, (_f64(3, 5, 2, 2),))
    assert gradgradcheck(ops.pixel_norm, (_f64(3, 5, 2, 2),))
    assert gradcheck(lambda x: ops.minibatch_stddev(x, 2), (_f64(4, 3, 2, 2),))
    assert gradgradcheck(lambda x: ops.minibatch_stddev(x, 2), (_f64(4, 3, 2, 2),))
