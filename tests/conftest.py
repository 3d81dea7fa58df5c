"""Shared test setup.

Without CUDA, the Triton kernels run under the Triton interpreter (TRITON_INTERPRET=1, read when a
kernel is decorated), so it is set here, before any test module imports a kernel. With CUDA the
kernels run natively. Also provides the comparison fixtures that report mismatch counts and the first
mismatching indices instead of a bare "not close".
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

if os.environ.get("TRITON_INTERPRET") == "1":
    # The interpreter truncates fp32 -> bf16; round to nearest even as a GPU does (see the function).
    from fastprogan.tools.interpreter import round_bf16_like_a_gpu

    round_bf16_like_a_gpu()


def _first_indices(bad: torch.Tensor, k: int = 5) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in idx) for idx in bad.nonzero()[:k]]


def assert_close_report(actual, expected, *, rtol: float, atol: float, what: str = "") -> None:
    """Elementwise |actual - expected| <= atol + rtol * |expected|, else a report of the mismatches."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    bad = ~((a - e).abs() <= atol + rtol * e.abs())
    if bad.any():
        idx = _first_indices(bad)
        rows = ", ".join(f"{i}: {a[i].item():.6g} vs {e[i].item():.6g}" for i in idx)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements differ (rtol={rtol}, atol={atol}); "
            f"max abs err {(a - e).abs().max().item():.3g}; first: {rows}"
        )


def assert_close_3way(ours, ref_lowp, ref_fp32, *, atol: float, what: str = "") -> None:
    """The half-precision rule: max|ours - ref32| <= 2 * max|ref_lowp - ref32| + atol.

    ``ref32`` is the reference on fp32-upcast inputs, ``ref_lowp`` the plain torch reference run in the
    low-precision dtype: ours may be at most twice as far from the truth as torch itself is.
    """
    o, lo, tr = (t.detach().double().cpu() for t in (ours, ref_lowp, ref_fp32))
    assert o.shape == tr.shape, f"{what}: shape {tuple(o.shape)} != {tuple(tr.shape)}"
    err_ours, err_torch = (o - tr).abs(), (lo - tr).abs()
    bound = 2 * err_torch.max().item() + atol
    bad = err_ours > bound
    if bad.any():
        idx = _first_indices(bad)
        rows = ", ".join(f"{i}: ours {o[i].item():.6g}, fp32 ref {tr[i].item():.6g}" for i in idx)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements exceed the 3-way bound {bound:.3g} "
            f"(2 x torch's own error {err_torch.max().item():.3g} + atol {atol}); max err "
            f"{err_ours.max().item():.3g}; first: {rows}"
        )


@pytest.fixture
def check_close():
    return assert_close_report


@pytest.fixture
def check_3way():
    return assert_close_3way
