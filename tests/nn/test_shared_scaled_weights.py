"""shared_scaled_weights: one scaled weight per layer for several passes, same numbers, fewer dispatches."""

import contextlib

import torch

from fastprogan.nn import EqualizedConv2d, EqualizedLinear, shared_scaled_weights
from fastprogan.tools.dispatch import count_ops


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        EqualizedConv2d(3, 5, 3, activation="lrelu", impl="ref"),
        torch.nn.Flatten(),
        EqualizedLinear(5 * 16, 1),
    )


def _three_passes(net, xs):
    return sum(net(x).square().sum() for x in xs)


def test_same_forward_and_gradients_with_fewer_dispatches():
    xs = [torch.randn(2, 3, 4, 4) for _ in range(3)]
    plain, shared = _net(), _net()
    loss_plain = _three_passes(plain, xs)
    with shared_scaled_weights(shared):
        loss_shared = _three_passes(shared, xs)
    assert torch.equal(loss_plain, loss_shared)  # the scaled weights are the same fp32 numbers
    loss_plain.backward()
    loss_shared.backward()
    for a, b in zip(plain.parameters(), shared.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)  # only the sum order differs

    def run(share):
        net = _net()
        with shared_scaled_weights(net) if share else contextlib.nullcontext():
            _three_passes(net, xs).backward()

    assert count_ops(lambda: run(True)).total <= count_ops(lambda: run(False)).total - 2 * 4


def test_cache_is_dropped_on_exit_and_keyed_by_grad_mode():
    net = _net()
    conv = net[0]
    x = torch.randn(1, 3, 4, 4)
    with shared_scaled_weights(net):
        with shared_scaled_weights(net):  # nested: keeps the outer cache
            w1 = conv.scaled_weight(x)
        assert conv.scaled_weight(x) is w1 and w1.requires_grad
        with torch.no_grad():
            w2 = conv.scaled_weight(x)
        assert w2 is not w1 and not w2.requires_grad
    assert conv._shared_weights is None
    with torch.no_grad():
        conv.weight.mul_(2)  # an optimizer step: a new block sees the new weight
    with shared_scaled_weights(net):
        assert torch.equal(conv.scaled_weight(x), conv.weight * conv.weight_scale)
