"""The 4x4 fused-weight construction (one GEMM): values, every derivative order, the per-step cache."""

import gc

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from fastprogan.ops import conv2d_downscale, upscale_conv2d
from fastprogan.ops import resample_weight as rw


def _box_conv(w: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The previous construction (a box-filter conv2d): the values must not change."""
    c_out, c_in = w.shape[:2]
    box = torch.full((1, 1, 2, 2), scale, dtype=w.dtype)
    return F.conv2d(w.reshape(c_out * c_in, 1, 3, 3), box, padding=1).reshape(c_out, c_in, 4, 4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scale", [1.0, 0.25, 0.0589])
def test_equals_the_box_filter_conv(dtype, scale):
    w = torch.randn(17, 5, 3, 3, dtype=dtype, generator=torch.Generator().manual_seed(3))
    tol = 1e-12 if dtype == torch.float64 else 4 * torch.finfo(dtype).eps * w.abs().max().item()
    torch.testing.assert_close(rw.four_shift_sum(w, scale), _box_conv(w, scale), rtol=0, atol=tol)
    up = rw.upscale_conv_weight(w, scale)
    assert up.shape == (5, 17, 4, 4) and up.is_contiguous()
    torch.testing.assert_close(up, _box_conv(w.flip((2, 3)), scale).transpose(0, 1), rtol=0, atol=tol)
    down = rw.downscale_conv_weight(w, scale)
    torch.testing.assert_close(down, _box_conv(w, 0.25 * scale), rtol=0, atol=tol)


def test_rejects_a_kernel_that_is_not_3x3():
    with pytest.raises(ValueError, match=r"must be \[A, B, 3, 3\], got \(2, 2, 5, 5\)"):
        rw.four_shift_sum(torch.randn(2, 2, 5, 5))


@pytest.mark.parametrize("fn", [rw.four_shift_sum, rw.upscale_conv_weight, rw.downscale_conv_weight])
def test_gradcheck_and_gradgradcheck_fp64(fn):
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: fn(t, 0.7), (w,))
    assert gradgradcheck(lambda t: fn(t, 0.7), (w,))


def test_third_order_derivative_is_exact():
    # The map A is linear: d/dw <A w, g> = A^T g; d/dg of <A^T g, v> = A v; d/dv of <A v, u> = A^T u.
    # Each level is differentiated with create_graph, so each must exist and stay exact.
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    u = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    (dw,) = torch.autograd.grad(rw.four_shift_sum(w), w, g, create_graph=True)  # [.., 3, 3]
    (dg,) = torch.autograd.grad(dw, g, v, create_graph=True)  # [.., 4, 4]
    (dv,) = torch.autograd.grad(dg, v, u)  # [.., 3, 3]

    def adjoint(t):  # 2x2 box sum without padding: [.., 4, 4] -> [.., 3, 3]
        return t[..., 1:, 1:] + t[..., :-1, 1:] + t[..., 1:, :-1] + t[..., :-1, :-1]

    torch.testing.assert_close(dw, adjoint(g.detach()), rtol=0, atol=1e-12)
    torch.testing.assert_close(dg, _box_conv(v.detach()), rtol=0, atol=1e-12)
    torch.testing.assert_close(dv, adjoint(u), rtol=0, atol=1e-12)


# ---- the per-step cache --------------------------------------------------------------------------


def _tiny_d(params, x):
    """A two-layer D made of the fused downscale conv, fed the parameters themselves."""
    w1, w2 = params
    h = F.leaky_relu(conv2d_downscale(x, w1, impl="fused"), 0.2)  # [N, 4, H/2, W/2]
    return conv2d_downscale(h, w2, impl="fused").mean(dim=(1, 2, 3))  # [N]


def _d_step(params, reals, fakes, u):
    """The three forwards of the WGAN-GP D step, the penalty's create_graph pass, one backward."""
    real = _tiny_d(params, reals)
    fake = _tiny_d(params, fakes)
    xhat = torch.lerp(reals, fakes, u).requires_grad_(True)
    (g,) = torch.autograd.grad(_tiny_d(params, xhat).sum(), xhat, create_graph=True)
    penalty = (g.square().sum(dim=(1, 2, 3)).sqrt() - 1).square()
    (fake - real + 10 * penalty).mean().backward()
    return [p.grad.clone() for p in params]


def _params():
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=g).requires_grad_(),
        torch.randn(5, 4, 3, 3, dtype=torch.float64, generator=g).requires_grad_(),
    ]


def test_d_step_builds_each_weight_once_and_gradients_match_uncached():
    reals, fakes = torch.randn(2, 3, 3, 8, 8, dtype=torch.float64)  # [N, C, H, W] each
    u = torch.rand(3, 1, 1, 1, dtype=torch.float64)
    params = _params()
    expect = _d_step(params, reals, fakes, u)  # no scope: built on every forward
    for p in params:
        p.grad = None
    with rw.fused_weight_cache() as store:
        got = _d_step(params, reals, fakes, u)
    assert store.builds == 2 and store.hits == 4, (store.builds, store.hits)  # 3 forwards x 2 layers
    assert not store.entries  # leaving the scope drops everything
    for a, b in zip(got, expect):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_not_served_after_a_backward_went_through_it():
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    with rw.fused_weight_cache() as store:
        upscale_conv2d(x, w, impl="fused").sum().backward()  # frees the first graph
        g1 = w.grad.clone()
        w.grad = None
        upscale_conv2d(x, w, impl="fused").sum().backward()  # must rebuild: old graph is gone
        assert store.builds == 2 and store.hits == 0
    torch.testing.assert_close(w.grad, g1, rtol=0, atol=0)


def test_no_grad_and_grad_forwards_never_share():
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    x = torch.randn(2, 3, 4, 4)
    with rw.fused_weight_cache() as store:
        with torch.no_grad():
            a = rw.downscale_conv_weight(w)
        b = rw.downscale_conv_weight(w)
        with torch.no_grad():
            c = rw.downscale_conv_weight(w)
        assert not a.requires_grad and b.requires_grad and c is a
        assert store.builds == 2
        y = conv2d_downscale(x, w, impl="fused")
        assert y.requires_grad and store.hits == 2  # c, then y's weight (b)
    w.requires_grad_(False)
    with rw.fused_weight_cache() as store:
        a = rw.downscale_conv_weight(w)
        w.requires_grad_(True)
        b = rw.downscale_conv_weight(w)
        assert b is not a and b.requires_grad and store.builds == 2


def test_an_optimizer_step_or_in_place_update_invalidates():
    w = torch.nn.Parameter(torch.randn(4, 3, 3, 3))
    opt = torch.optim.Adam([w], lr=0.1, foreach=True)
    with rw.fused_weight_cache() as store:
        with torch.no_grad():
            before = rw.upscale_conv_weight(w)
            w.grad = torch.ones_like(w)
            opt.step()  # in place: bumps w._version
            after = rw.upscale_conv_weight(w)
            assert store.builds == 2 and after is not before
            torch.testing.assert_close(after, rw._build_upscale(w, 1.0), rtol=0, atol=0)
            w.mul_(2.0)
            assert rw.upscale_conv_weight(w) is not after


def test_key_includes_dtype_scale_kind_and_identity():
    w = torch.randn(4, 3, 3, 3)
    with rw.fused_weight_cache() as store:
        a = rw.upscale_conv_weight(w)
        assert rw.upscale_conv_weight(w) is a and store.hits == 1
        assert rw.upscale_conv_weight(w, 0.5) is not a
        assert rw.upscale_conv_weight(w.double()).dtype == torch.float64
        assert rw.downscale_conv_weight(w).shape == (4, 3, 4, 4)
        assert rw.upscale_conv_weight(w.clone()) is not a  # equal values, another tensor
    assert rw.upscale_conv_weight(w) is not rw.upscale_conv_weight(w)  # outside a scope: no cache


def test_inference_tensors_are_never_cached():
    with torch.inference_mode():
        w = torch.randn(4, 3, 3, 3)  # an inference tensor: no _version to key on
    with rw.fused_weight_cache() as store, torch.inference_mode():
        a = rw.upscale_conv_weight(w)
        assert rw.upscale_conv_weight(w) is not a and store.builds == 0 and not store.entries


def test_nested_scopes_share_and_entries_of_dead_tensors_are_dropped():
    w = torch.randn(4, 3, 3, 3)
    with rw.fused_weight_cache() as outer:
        with rw.fused_weight_cache() as inner:
            assert inner is outer
            a = rw.upscale_conv_weight(w)
        assert rw.upscale_conv_weight(w) is a
        rw.upscale_conv_weight(w * 2.0)  # a per-call tensor: its entry dies with it
        gc.collect()
        assert len(outer.entries) == 1
    assert not outer.entries


def test_fused_ops_compile_fullgraph_inside_and_outside_a_scope():
    torch._dynamo.reset()
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    x = torch.randn(2, 3, 4, 4)

    def f(x, w):
        return conv2d_downscale(upscale_conv2d(x, w, impl="fused"), w.transpose(0, 1), impl="fused")

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    eager = f(x, w)
    for scope in (False, True):
        with rw.fused_weight_cache() if scope else torch.enable_grad():
            y = compiled(x, w)
        torch.testing.assert_close(y, eager, rtol=1e-6, atol=1e-6)
        (gw,) = torch.autograd.grad(y.sum(), w)
        (ge,) = torch.autograd.grad(f(x, w).sum(), w)
        torch.testing.assert_close(gw, ge, rtol=1e-5, atol=1e-6)


def test_a_scope_is_per_thread():
    import threading

    w = torch.randn(4, 3, 3, 3)
    seen = []
    with rw.fused_weight_cache() as store:
        a = rw.upscale_conv_weight(w)
        t = threading.Thread(target=lambda: seen.append(rw.upscale_conv_weight(w)))
        t.start()
        t.join()
        assert seen[0] is not a and store.builds == 1  # the other thread had no scope: built its own
