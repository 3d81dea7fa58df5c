"""Per-op rows: every fused op at every resolution's layer shape, per provider, dtype and mode.

Problems are entries of :data:`OP_PROBLEMS` (name -> factory(resolution, dtype, device, quick) ->
:class:`OpProblem` or None where the op has no layer at that resolution); providers are entries of
:data:`OP_PROVIDERS` (name -> factory(problem, session) -> callable). A new fused kernel adds a problem
(its layer shapes, reference and fast path), a new way of running ops adds a provider (docs/benchmarks.md).

Reported per row: median and IQR of the call (forward, or forward + backward through
``torch.autograd.grad`` with a fixed cotangent: no gradient accumulation), the bytes the traffic counter
(:mod:`fastprogan.tools.traffic`) attributes to fastprogan's GPU path of the op on meta tensors, the
effective bandwidth bytes / time (the same bytes for every provider, so GB/s compare like for like) and
its fraction of the device's peak (the roofline fraction); TFLOP/s for the convolutions (the reference
conv's multiply-adds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastprogan import ops
from fastprogan.bench import timing
from fastprogan.bench.registry import Registry
from fastprogan.bench.runner import DTYPES, Session, Skipped, Task, attempt, spread
from fastprogan.bench.shapes import QUICK_BATCH, QUICK_CHANNELS, batch_for, nf, resolutions
from fastprogan.bench.smoke import lrelu_grad_bias_ref, lrelu_grad_ref
from fastprogan.bench.train import require_compile
from fastprogan.ops.bias_act import lrelu_grad
from fastprogan.ops.upscale_conv2d import upscale_path
from fastprogan.tools import traffic

SLOPE = 0.2


@dataclass
class OpProblem:
    """One op at one layer shape.

    ``inputs(device)`` makes fresh leaf tensors (those to differentiate require grad); ``ref`` is the
    plain-PyTorch reference, ``fast`` fastprogan's ``impl="auto"`` call, ``gpu_path`` the same call with
    the implementation ``auto`` picks on a GPU spelled out (counted on meta tensors for the bytes).
    ``triton_only``: the fast path is a Triton kernel with no CPU path (never timed off CUDA).
    """

    inputs: Callable[[torch.device], list[torch.Tensor]]
    ref: Callable[..., object]
    fast: Callable[..., object]
    gpu_path: Callable[..., object]
    modes: tuple[str, ...]
    batch: int
    shape: str
    macs: float = 0.0  # multiply-adds of the reference forward (convs), 0: report no TFLOP/s
    triton_only: bool = False


ProblemFactory = Callable[[int, torch.dtype, bool], "OpProblem | None"]
OP_PROBLEMS: Registry[ProblemFactory] = Registry("op problem")
ProviderFactory = Callable[[OpProblem, Session], Callable[..., object]]
OP_PROVIDERS: Registry[ProviderFactory] = Registry("op provider")


def _dims(resolution: int, quick: bool) -> tuple[int, int]:
    """(batch, channels) of the layers at ``resolution``."""
    return (QUICK_BATCH, QUICK_CHANNELS) if quick else (batch_for(resolution), nf(resolution))


def _leaf(shape, dtype, device, grad=True):
    return torch.randn(shape, dtype=dtype, device=device).requires_grad_(grad)


def _shape(*dims: int) -> str:
    return "x".join(str(d) for d in dims)


def _epilogue(pixel_norm: bool) -> ProblemFactory:
    def factory(r: int, dtype: torch.dtype, quick: bool) -> OpProblem:
        n, c = _dims(r, quick)
        return OpProblem(
            inputs=lambda dev: [_leaf((n, c, r, r), dtype, dev), _leaf((c,), torch.float32, dev)],
            ref=lambda x, b: ops.bias_act_ref(x, b, SLOPE, pixel_norm),
            fast=lambda x, b: ops.bias_act(x, b, SLOPE, pixel_norm),
            gpu_path=lambda x, b: ops.bias_act(x, b, SLOPE, pixel_norm, impl="triton"),
            modes=("fwd+bwd", "fwd"),
            batch=n,
            shape=_shape(n, c, r, r),
        )

    return factory


OP_PROBLEMS.register("bias_act", "G/D epilogue without pixel norm: x [N, nf(R), R, R] + bias, lrelu")(
    _epilogue(False)
)
OP_PROBLEMS.register("bias_act_pixel_norm", "G epilogue: + bias, lrelu, pixel norm at [N, nf(R), R, R]")(
    _epilogue(True)
)


def _lrelu_grad_problem(with_bias: bool) -> ProblemFactory:
    def factory(r: int, dtype: torch.dtype, quick: bool) -> OpProblem:
        n, c = _dims(r, quick)

        def inputs(dev):
            return [_leaf((n, c, r, r), dtype, dev, False), _leaf((n, c, r, r), dtype, dev, False)]

        if with_bias:
            fast = lambda g, out: torch.ops.fastprogan.lrelu_grad_bias(g, out, SLOPE)
            ref = lambda g, out: lrelu_grad_bias_ref(g, out, SLOPE)
        else:
            fast = lambda g, out: lrelu_grad(g, out, SLOPE)
            ref = lambda g, out: lrelu_grad_ref(g, out, SLOPE)
        return OpProblem(inputs, ref, fast, fast, ("fwd",), n, _shape(n, c, r, r), triton_only=True)

    return factory


OP_PROBLEMS.register("lrelu_grad", "D backward of bias_act (no bias grad): grad, out [N, nf(R), R, R]")(
    _lrelu_grad_problem(False)
)
OP_PROBLEMS.register("lrelu_grad_bias", "D backward of bias_act with the bias gradient folded in")(
    _lrelu_grad_problem(True)
)


@OP_PROBLEMS.register("minibatch_stddev", "D's 4x4 block: x [N, nf(4), 4, 4] with the batch of resolution R")
def _stddev(r: int, dtype: torch.dtype, quick: bool) -> OpProblem:
    n, c = (QUICK_BATCH, QUICK_CHANNELS) if quick else (batch_for(r), nf(4))
    return OpProblem(
        inputs=lambda dev: [_leaf((n, c, 4, 4), dtype, dev)],
        ref=lambda x: ops.minibatch_stddev_ref(x, 4),
        fast=lambda x: ops.minibatch_stddev(x, 4),
        gpu_path=lambda x: ops.minibatch_stddev(x, 4, impl="triton"),
        modes=("fwd+bwd", "fwd"),
        batch=n,
        shape=_shape(n, c, 4, 4),
    )


@OP_PROBLEMS.register("upscale_conv2d", "G: 2x nearest up + 3x3 conv, [N, nf(R/2), R/2, R/2] -> nf(R)")
def _upscale(r: int, dtype: torch.dtype, quick: bool) -> OpProblem | None:
    if r < 8:
        return None
    n, c_out = _dims(r, quick)
    c_in = c_out if quick else nf(r // 2)
    h = r // 2

    def gpu_path(x, w):
        backward = torch.is_grad_enabled() and x.requires_grad
        return ops.upscale_conv2d(x, w, impl=upscale_path(n, c_in, c_out, h, h, "cuda", dtype, backward))

    return OpProblem(
        inputs=lambda dev: [
            _leaf((n, c_in, h, h), dtype, dev),
            _leaf((c_out, c_in, 3, 3), torch.float32, dev),
        ],
        ref=lambda x, w: ops.upscale_conv2d(x, w, impl="ref"),
        fast=lambda x, w: ops.upscale_conv2d(x, w),
        gpu_path=gpu_path,
        modes=("fwd+bwd", "fwd"),
        batch=n,
        shape=_shape(n, c_in, h, h),
        macs=9.0 * n * r * r * c_in * c_out,
    )


@OP_PROBLEMS.register("conv2d_downscale", "D: 3x3 conv + 2x2 avg pool, [N, nf(R), R, R] -> nf(R/2)")
def _downscale(r: int, dtype: torch.dtype, quick: bool) -> OpProblem | None:
    if r < 8:
        return None
    n, c_in = _dims(r, quick)
    c_out = c_in if quick else nf(r // 2)
    return OpProblem(
        inputs=lambda dev: [
            _leaf((n, c_in, r, r), dtype, dev),
            _leaf((c_out, c_in, 3, 3), torch.float32, dev),
        ],
        ref=lambda x, w: ops.conv2d_downscale(x, w, impl="ref"),
        fast=lambda x, w: ops.conv2d_downscale(x, w),
        gpu_path=lambda x, w: ops.conv2d_downscale(x, w, impl="fused"),
        modes=("fwd+bwd", "fwd"),
        batch=n,
        shape=_shape(n, c_in, r, r),
        macs=9.0 * n * r * r * c_in * c_out,
    )


# The fused conv kernels (issue 11): one problem per layer kind, at every resolution's layer shape.
# (op, C_in(R), C_out(R), input side(R), pixel_norm); the GPU path counted is the fused kernel.
FUSED_CONV_LAYERS = {
    "conv2d_bias_act": ("conv2d_bias_act", nf, nf, lambda r: r, False),
    "conv2d_bias_act_pixel_norm": ("conv2d_bias_act", nf, nf, lambda r: r, True),
    "conv2d_downscale_bias_act": ("conv2d_downscale_bias_act", nf, lambda r: nf(r // 2), lambda r: r, False),
    "upscale_conv2d_bias_act": ("upscale_conv2d_bias_act", lambda r: nf(r // 2), nf, lambda r: r // 2, True),
}


def fused_conv_layer(name: str, r: int, quick: bool) -> tuple[str, int, int, int, int, bool]:
    """(op, batch, C_in, C_out, input side, pixel_norm) of fused-conv layer ``name`` at resolution r."""
    op, c_in, c_out, side, pixel_norm = FUSED_CONV_LAYERS[name]
    if quick:
        return op, QUICK_BATCH, QUICK_CHANNELS, QUICK_CHANNELS, side(r), pixel_norm
    return op, batch_for(r), c_in(r), c_out(r), side(r), pixel_norm


def _fused_conv_problem(name: str) -> ProblemFactory:
    def factory(r: int, dtype: torch.dtype, quick: bool) -> OpProblem | None:
        if r < 8 and not quick:  # the layers exist from 8x8; --quick's 4x4 row proves the compile path
            return None
        op, n, c_in, c_out, h, pixel_norm = fused_conv_layer(name, r, quick)
        fn, ref = getattr(ops, op), getattr(ops, f"{op}_ref")
        kw = {} if op == "conv2d_downscale_bias_act" else {"pixel_norm": pixel_norm}
        conv_side = 2 * h if op == "upscale_conv2d_bias_act" else h  # the reference's 3x3 conv output
        return OpProblem(
            inputs=lambda dev: [
                _leaf((n, c_in, h, h), dtype, dev),
                _leaf((c_out, c_in, 3, 3), torch.float32, dev),
                _leaf((c_out,), torch.float32, dev),
            ],
            ref=lambda x, w, b: ref(x, w, b, SLOPE, **kw),
            fast=lambda x, w, b: fn(x, w, b, SLOPE, **kw),
            # the fused kernel where it has a config (C_out <= 128), else cuDNN + epilogue
            gpu_path=lambda x, w, b: fn(x, w, b, SLOPE, **kw, impl="triton" if c_out <= 128 else "cudnn"),
            modes=("fwd+bwd", "fwd"),
            batch=n,
            shape=_shape(n, c_in, h, h) + f"->{c_out}",
            macs=9.0 * n * conv_side * conv_side * c_in * c_out,
        )

    return factory


for _name, _doc in (
    ("conv2d_bias_act", "D conv: fused 3x3 conv + bias + lrelu, [N, nf(R), R, R]"),
    ("conv2d_bias_act_pixel_norm", "G conv: fused 3x3 conv + bias + lrelu + pixel norm, [N, nf(R), R, R]"),
    ("conv2d_downscale_bias_act", "D conv1_down: fused 3x3 conv + 2x2 pool + bias + lrelu -> nf(R/2)"),
    ("upscale_conv2d_bias_act", "G conv0_up: fused 2x up + 3x3 conv + bias + lrelu + pixel norm"),
):
    OP_PROBLEMS.register(_name, _doc)(_fused_conv_problem(_name))


@OP_PROVIDERS.register("fastprogan", "impl='auto' (Triton kernels and fused convs on CUDA)")
def _fast_provider(problem: OpProblem, session: Session) -> Callable[..., object]:
    if problem.triton_only and not session.cuda:
        raise Skipped(
            "Triton kernel: off CUDA only the interpreter runs it, and the interpreter is never timed"
        )
    return problem.fast


@OP_PROVIDERS.register("eager-ref", "the plain-PyTorch reference, eager")
def _ref_provider(problem: OpProblem, session: Session) -> Callable[..., object]:
    return problem.ref


@OP_PROVIDERS.register("compile-ref", "torch.compile of the reference (Inductor fuses epilogues too)")
def _compile_provider(problem: OpProblem, session: Session) -> Callable[..., object]:
    return torch.compile(problem.ref, backend=require_compile(session))


def _outputs(y: object) -> list[torch.Tensor]:
    return list(y) if isinstance(y, (tuple, list)) else [y]  # type: ignore[list-item]


def make_call(fn: Callable[..., object], inputs: list[torch.Tensor], mode: str) -> Callable[[], object]:
    """One timed call: the forward under no_grad, or forward + autograd.grad w.r.t. the leaf inputs."""
    if mode == "fwd":

        def forward() -> object:
            with torch.no_grad():
                return fn(*inputs)

        return forward
    diff = [t for t in inputs if t.requires_grad]
    with torch.no_grad():
        cts = [torch.randn_like(y) for y in _outputs(fn(*inputs))]

    def forward_backward() -> object:
        outs = _outputs(fn(*inputs))
        return torch.autograd.grad(outs, diff, cts)

    return forward_backward


def counted_bytes(problem: OpProblem, mode: str) -> int:
    """Bytes of fastprogan's GPU path for this problem, from the traffic counter on meta tensors."""
    meta = problem.inputs(torch.device("meta"))  # shapes only: no memory, no kernels
    call = make_call(problem.gpu_path, meta, mode)
    return traffic.count(call).total


def measure_row(session: Session, provider: str, problem: OpProblem, mode: str) -> list[dict]:
    fn = OP_PROVIDERS[provider].factory(problem, session)
    device = session.device
    call = make_call(fn, problem.inputs(device), mode)
    warmup, reps = (1, 3) if session.options.quick else (3, 25)
    timing.reset_peak_memory(device)
    t = timing.time_calls(call, device, warmup=warmup, reps=reps, max_s=1.0)
    nbytes = counted_bytes(problem, mode)
    seconds = t.median_ms / 1e3
    gb_s = nbytes / seconds / 1e9 if nbytes else None
    flops = 2 * problem.macs * (3 if mode == "fwd+bwd" else 1)
    bw = session.peak_bandwidth
    return [
        {
            "status": "ok",
            "median_ms": t.median_ms,
            "iqr_ms": t.iqr_ms,
            "reps": t.reps,
            "bytes": nbytes or None,
            "gb_per_s": gb_s,
            "roofline_frac": None if gb_s is None or bw is None else gb_s * 1e9 / bw,
            "flops": flops or None,
            "tflop_per_s": flops / seconds / 1e12 if flops else None,
            "peak_mem_mb": timing.peak_memory_mb(device),
        }
    ]


def _est(session: Session, provider: str) -> float:
    if provider.startswith("compile"):
        return 5.0 if session.cuda else 1.5
    return 0.4 if session.cuda else 0.1


def tasks(session: Session) -> list[Task]:
    """Priority (GPU): bf16 fwd+bwd, bf16 fwd, compile-ref bf16 fwd+bwd at 3 resolutions, fp32/fp16, the rest."""
    quick = session.options.quick
    res_list = spread(list(resolutions(quick, session.options.resolutions)))
    dtypes = session.dtypes(("fp32",) if not session.cuda else ("bf16", "fp32", "fp16"))
    providers = [e.name for e in OP_PROVIDERS if session.wants_provider(e.name)]
    fast = [p for p in providers if not p.startswith("compile")]
    slow = [p for p in providers if p.startswith("compile")]
    first, rest = dtypes[:1], dtypes[1:]
    tiers: list[tuple[tuple[str, ...], list[str], tuple[str, ...], list[int]]] = [
        (first, fast, ("fwd+bwd",), res_list),
        (first, fast, ("fwd",), res_list),
        (first, slow, ("fwd+bwd",), res_list[:3]),
        (rest, fast, ("fwd+bwd",), res_list),
        (rest, fast, ("fwd",), res_list),
        (first, slow, ("fwd+bwd",), res_list[3:]),
        (dtypes, slow, ("fwd",), res_list),
        (rest, slow, ("fwd+bwd",), res_list),
    ]
    if quick:  # compile rows prove the code path once per op (tracing costs seconds on a CPU)
        tiers = [t for t in tiers if t[1] is fast] + [(first, slow, ("fwd+bwd", "fwd"), res_list[:1])]
    out: list[Task] = []
    seen: set[tuple] = set()
    for tier_dtypes, tier_providers, tier_modes, tier_res in tiers:
        for dtype_name in tier_dtypes:
            for r in tier_res:
                for entry in OP_PROBLEMS:
                    problem = entry.factory(r, DTYPES[dtype_name], quick)
                    if problem is None:
                        continue
                    for mode in tier_modes:
                        if mode not in problem.modes:
                            continue
                        for provider in tier_providers:
                            key = (entry.name, dtype_name, r, mode, provider)
                            if key in seen or (quick and provider in slow and mode != problem.modes[0]):
                                continue
                            seen.add(key)
                            out.append(_task(session, entry.name, provider, problem, r, dtype_name, mode))
    return out


def _task(
    session: Session, name: str, provider: str, problem: OpProblem, r: int, dtype: str, mode: str
) -> Task:
    identity = {
        "name": name,
        "provider": provider,
        "resolution": r,
        "dtype": dtype,
        "mode": mode,
        "batch": problem.batch,
        "shape": problem.shape,
    }
    return Task(
        "ops",
        f"{name} {provider} {dtype} {mode} {r}px",
        _est(session, provider),
        lambda: attempt(identity, lambda: measure_row(session, provider, problem, mode)),
        kind=provider,
    )
