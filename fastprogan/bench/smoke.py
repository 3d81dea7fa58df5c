"""Correctness smoke on the device: every Triton kernel (``impl="triton"``) against its ``_ref``.

For each case, shape and dtype: the forward, the backward (input and parameter gradients for a random
cotangent) and, for the ops D differentiates twice (bias_act without pixel norm, lrelu_grad,
lrelu_grad_bias, minibatch_stddev), the double backward (the gradient of <backward, v> w.r.t. the inputs
and the cotangent, the path the WGAN-GP penalty takes). fp32 is compared tightly against the fp32
reference; bf16/fp16 by the 3-way rule of the test suite: max|ours - ref32| <= 2 max|ref_lowp - ref32|
+ atol, where ref32 runs on the fp32 upcast of the same low-precision inputs.

Shapes: on a GPU the paper's layer shapes (nf(R) channels, the v2-1gpu batch) at a few resolutions; on
CPU tiny odd shapes under the Triton interpreter (TRITON_INTERPRET=1, set by the CLI before any kernel
is imported). The smoke is never timed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastprogan import ops
from fastprogan.bench.runner import DTYPES, Session, Task, attempt
from fastprogan.bench.shapes import batch_for, nf
from fastprogan.ops._common import reduction_dtype
from fastprogan.ops.bias_act import bias_act_ref, lrelu_grad
from fastprogan.ops.pixel_norm import pixel_norm_ref

SLOPE = 0.2
GPU_RESOLUTIONS = (4, 128, 1024)  # nf = 512, 128, 16: the kernels' channel-tile variants, and 4M-pixel maps
FP32_REL_TOL = 1e-4  # max|ours - ref| <= 1e-4 max|ref| + 1e-6 (reduction order differs from torch's)
LOWP_ATOL = 1e-3  # the 3-way rule's atol, relative to max|ref32| (the tests use 1e-3 on O(1) values)


@dataclass(frozen=True)
class SmokeCase:
    """A fused op and its reference; ``params`` marks inputs kept fp32 (parameters), ``grads`` the
    differentiable ones; ``orders`` 2 adds the double backward."""

    name: str
    kernels: str
    triton: Callable[..., object]
    ref: Callable[..., object]
    inputs: Callable[[int, torch.device, bool], list[torch.Tensor]]  # (resolution, device, quick) -> fp32
    grads: tuple[bool, ...]
    params: tuple[bool, ...]
    orders: int


def _act_shape(resolution: int, quick: bool) -> tuple[int, int, int, int]:
    if quick:
        return (3, 5, 5, 7)  # odd sizes: mask bugs show as wrong values
    return (batch_for(resolution), nf(resolution), resolution, resolution)


def _x_b(resolution: int, device: torch.device, quick: bool) -> list[torch.Tensor]:
    shape = _act_shape(resolution, quick)
    return [_noise(shape, 1, device), _noise((shape[1],), 2, device)]


def _x(resolution: int, device: torch.device, quick: bool) -> list[torch.Tensor]:
    return [_noise(_act_shape(resolution, quick), 1, device)]


def _g_out(resolution: int, device: torch.device, quick: bool) -> list[torch.Tensor]:
    shape = _act_shape(resolution, quick)
    return [_noise(shape, 3, device), torch.nn.functional.leaky_relu(_noise(shape, 4, device), SLOPE)]


def _stddev_x(resolution: int, device: torch.device, quick: bool) -> list[torch.Tensor]:
    shape = (4, 5, 4, 4) if quick else (batch_for(resolution), nf(4), 4, 4)  # D's last block, any batch
    return [_noise(shape, 5, device)]


def _noise(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)


def lrelu_grad_ref(grad: torch.Tensor, out: torch.Tensor, slope: float) -> torch.Tensor:
    """lrelu's input gradient given its output: the kernel eager autograd runs for ``F.leaky_relu``
    (``leaky_relu_backward`` with ``self_is_result``), differentiable w.r.t. ``grad`` to every order."""
    return torch.ops.aten.leaky_relu_backward(grad, out, slope, True)


def lrelu_grad_bias_ref(
    grad: torch.Tensor, out: torch.Tensor, slope: float
) -> tuple[torch.Tensor, torch.Tensor]:
    gx = lrelu_grad_ref(grad, out, slope)
    return gx, gx.to(reduction_dtype(gx.dtype)).sum(dim=(0, 2, 3))


def _lrelu_grad_bias_triton(grad: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lrelu_grad(grad, out, SLOPE)  # the public checks (device, dtype, Triton availability), then the op
    return torch.ops.fastprogan.lrelu_grad_bias(grad, out, SLOPE)


CASES: list[SmokeCase] = [
    SmokeCase(
        "bias_act",
        "bias_lrelu_forward, lrelu_grad_bias, lrelu_grad",
        lambda x, b: ops.bias_act(x, b, SLOPE, impl="triton"),
        lambda x, b: bias_act_ref(x, b, SLOPE),
        _x_b,
        (True, True),
        (False, True),
        2,
    ),
    SmokeCase(
        "bias_act_pixel_norm",
        "bias_act_pixel_norm forward and two-stage backward",
        lambda x, b: ops.bias_act(x, b, SLOPE, pixel_norm=True, impl="triton"),
        lambda x, b: bias_act_ref(x, b, SLOPE, pixel_norm=True),
        _x_b,
        (True, True),
        (False, True),
        1,
    ),
    SmokeCase(
        "pixel_norm",
        "bias_act_pixel_norm without bias",
        lambda x: ops.pixel_norm(x, impl="triton"),
        pixel_norm_ref,
        _x,
        (True,),
        (False,),
        1,
    ),
    SmokeCase(
        "lrelu_grad",
        "lrelu_grad",
        lambda g, out: lrelu_grad(g, out, SLOPE),
        lambda g, out: lrelu_grad_ref(g, out, SLOPE),
        _g_out,
        (True, False),
        (False, False),
        2,
    ),
    SmokeCase(
        "lrelu_grad_bias",
        "lrelu_grad_bias (two-stage bias reduction)",
        _lrelu_grad_bias_triton,
        lambda g, out: lrelu_grad_bias_ref(g, out, SLOPE),
        _g_out,
        (True, False),
        (False, False),
        2,
    ),
    SmokeCase(
        "minibatch_stddev",
        "minibatch_stddev",
        lambda x: ops.minibatch_stddev(x, 4, impl="triton"),
        lambda x: ops.minibatch_stddev_ref(x, 4),
        _stddev_x,
        (True,),
        (False,),
        2,
    ),
]


def _as_tuple(y: object) -> tuple[torch.Tensor, ...]:
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)  # type: ignore[arg-type]


def evaluate(
    case: SmokeCase,
    fn: Callable[..., object],
    masters: list[torch.Tensor],
    value_dtype: torch.dtype,
    fp32: bool,
) -> dict[str, list[torch.Tensor | None]]:
    """Forward, backward (and double backward) of ``fn`` on ``masters`` rounded to ``value_dtype``
    (then upcast to fp32 when ``fp32``). Cotangents are seeded noise rounded the same way."""
    device = masters[0].device

    def prep(t: torch.Tensor, param: bool) -> torch.Tensor:
        t = t if param else t.to(value_dtype)
        return t.float() if fp32 else t

    inputs = [
        prep(m, p).detach().requires_grad_(g)
        for m, p, g in zip(masters, case.params, case.grads, strict=True)
    ]
    outputs = _as_tuple(fn(*inputs))
    result: dict[str, list[torch.Tensor | None]] = {"fwd": [y.detach() for y in outputs]}
    diff = [t for t, g in zip(inputs, case.grads, strict=True) if g]
    cts = [prep(_noise(tuple(y.shape), 10 + i, device), False).to(y.dtype) for i, y in enumerate(outputs)]
    cts = [c.requires_grad_(case.orders >= 2) for c in cts]
    g1 = torch.autograd.grad(outputs, diff, cts, create_graph=case.orders >= 2, allow_unused=True)
    result["bwd"] = [None if g is None else g.detach() for g in g1]
    if case.orders >= 2:
        live = [g for g in g1 if g is not None and g.requires_grad]
        vs = [prep(_noise(tuple(g.shape), 20 + i, device), False).to(g.dtype) for i, g in enumerate(live)]
        g2 = torch.autograd.grad(live, diff + cts, vs, allow_unused=True)
        result["double_bwd"] = [None if g is None else g.detach() for g in g2]
    return result


def compare(
    ours: torch.Tensor | None, ref_lowp: torch.Tensor | None, ref32: torch.Tensor | None, dtype: torch.dtype
) -> tuple[bool, str]:
    """(ok, detail) for one tensor; None (no gradient) must be None or zero on both sides."""
    if ours is None or ref32 is None:
        other = ref32 if ours is None else ours
        ok = other is None or not bool(other.abs().max() > 0)
        return ok, "" if ok else "one side has no gradient, the other a non-zero one"
    if ours.shape != ref32.shape:
        return False, f"shape {tuple(ours.shape)} != {tuple(ref32.shape)}"
    o, r = ours.double(), ref32.double()
    scale = float(r.abs().max())
    if not torch.isfinite(o).all():
        return False, "non-finite values"
    err = float((o - r).abs().max())
    if dtype == torch.float32:
        bound = FP32_REL_TOL * scale + 1e-6
    else:
        torch_err = float((ref_lowp.double() - r).abs().max())
        bound = 2 * torch_err + LOWP_ATOL * scale + 1e-6
    return err <= bound, f"max err {err:.3g} (bound {bound:.3g})"


def run_case(case: SmokeCase, resolution: int, dtype_name: str, session: Session) -> list[dict]:
    """The rows (one per derivative order) of one case at one shape and dtype."""
    dtype = DTYPES[dtype_name]
    masters = case.inputs(resolution, session.device, session.options.quick)
    ours = evaluate(case, case.triton, masters, dtype, fp32=False)
    ref_lowp = evaluate(case, case.ref, masters, dtype, fp32=False)
    ref32 = evaluate(case, case.ref, masters, dtype, fp32=True)
    rows = []
    shape = "x".join(str(s) for s in masters[0].shape)
    for mode in ours:
        details, ok = [], True
        for i, (a, b, c) in enumerate(zip(ours[mode], ref_lowp[mode], ref32[mode], strict=True)):
            good, detail = compare(a, b, c, dtype)
            ok &= good
            if detail:
                details.append(f"#{i}: {detail}")
        rows.append(
            {
                "name": case.name,
                "provider": "triton-vs-ref",
                "resolution": resolution,
                "dtype": dtype_name,
                "mode": mode,
                "batch": masters[0].shape[0],
                "shape": shape,
                "status": "ok" if ok else "failed",
                "detail": f"{case.kernels}; " + "; ".join(details),
            }
        )
    return rows


def tasks(session: Session) -> list[Task]:
    """One task per case, resolution and dtype (fp32, bf16, fp16)."""
    import os

    import fastprogan.ops.bias_act  # noqa: F401  (registers the fastprogan:: ops)

    if not session.cuda and os.environ.get("TRITON_INTERPRET") == "1":
        from fastprogan.tools.interpreter import round_bf16_like_a_gpu

        round_bf16_like_a_gpu()  # the interpreter truncates fp32 -> bf16; a GPU rounds to nearest even
    quick = session.options.quick
    resolutions = (4,) if quick else GPU_RESOLUTIONS
    if session.options.resolutions:
        resolutions = tuple(r for r in resolutions if r in session.options.resolutions) or resolutions
    est = 0.5 if not session.cuda else 2.0  # first launch of a specialisation compiles it
    out = []
    for dtype_name in session.dtypes(("fp32", "bf16", "fp16")):
        for case in CASES:
            for r in resolutions:
                ident = {"name": case.name, "provider": "triton-vs-ref", "resolution": r, "dtype": dtype_name}
                out.append(
                    Task(
                        "smoke",
                        f"{case.name} {dtype_name} {r}px",
                        est,
                        lambda c=case, r=r, d=dtype_name, i=ident: attempt(
                            i, lambda: run_case(c, r, d, session)
                        ),
                    )
                )
    return out
