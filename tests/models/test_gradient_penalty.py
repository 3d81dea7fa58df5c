"""WGAN-GP through D (double backward): the fused-op D equals the same D built from reference ops."""

import pytest
import torch

from fastprogan.models import Discriminator


def wgan_gp_d_loss(D, reals, fakes, lod, u):
    """D(fake) - D(real) + 10 (||grad D(xhat)|| - 1)^2 + 0.001 D(real)^2, mean over the batch."""
    d_real, d_fake = D(reals, lod).squeeze(1), D(fakes, lod).squeeze(1)
    xhat = torch.lerp(reals, fakes, u).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(xhat, lod).sum(), xhat, create_graph=True)
    penalty = (grad.flatten(1).norm(dim=1) - 1).square()
    return (d_fake - d_real + 10 * penalty + 0.001 * d_real.square()).mean(), penalty.detach()


@pytest.mark.parametrize(
    "impl", ["auto", "triton"]
)  # CPU: fused-weight convs; + Triton epilogues (interpreter)
@pytest.mark.parametrize(("lod", "res"), [(1.0, 8), (0.6, 16)])  # stable, and mid-fade
def test_penalty_parameter_gradients_match_reference_ops(lod, res, impl):
    torch.manual_seed(0)
    kw = dict(fmap_base=32, fmap_max=8, mbstd_group_size=2)
    D = Discriminator(16, 3, impl=impl, **kw).double()
    D_ref = Discriminator(16, 3, impl="ref", **kw).double()
    D_ref.load_state_dict(D.state_dict())
    if impl == "triton":
        # Triton passes a Python float argument as an fp32 scalar, so in these fp64 runs the kernels'
        # slope is fp32(0.2) = 0.2 * (1 + 1.5e-8); give the oracle the same slope to compare tightly.
        slope32 = float(torch.tensor(0.2, dtype=torch.float32))
        for m in D_ref.modules():
            if getattr(m, "negative_slope", None) == 0.2:
                m.negative_slope = slope32
    reals, fakes = (torch.randn(4, 3, res, res, dtype=torch.float64) for _ in range(2))
    u = torch.rand(4, 1, 1, 1, dtype=torch.float64)
    results = []
    for net in (D, D_ref):
        loss, penalty = wgan_gp_d_loss(net, reals, fakes, lod, u)
        loss.backward()
        grads = {k: p.grad for k, p in net.named_parameters() if p.grad is not None}
        results.append((loss.detach(), penalty, grads))
    (loss, pen, grads), (loss_ref, pen_ref, grads_ref) = results
    torch.testing.assert_close(pen, pen_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-12)
    assert grads.keys() == grads_ref.keys()
    used = {"fromrgb.8x8.weight", "blocks.8x8.conv1_down.weight", "blocks.4x4.dense1.weight"}
    if res == 16:  # mid-fade: the new block and the previous fromRGB both get gradients
        used |= {"fromrgb.16x16.weight", "blocks.16x16.conv0.weight"}
    assert used <= grads.keys()
    for k, g in grads.items():
        assert g.abs().sum() > 0, f"{k} got a zero gradient"
        torch.testing.assert_close(
            g,
            grads_ref[k],
            rtol=1e-9,
            atol=1e-11,
            msg=lambda m, k=k: f"{k}: {m}",
        )
