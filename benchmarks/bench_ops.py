"""Per-op benchmarks: fastprogan vs eager torch vs torch.compile of the reference (pytest-benchmark).

    python -m pytest benchmarks/bench_ops.py --benchmark-enable -q

Ops (ProGAN's channels nf(R) and the 1-GPU v2 preset's batch per resolution R): the G epilogue
(bias + lrelu + pixel norm), the D epilogue (bias + lrelu), the G block (nearest 2x up + 3x3 conv +
G epilogue), the D block (conv + conv-downscale + D epilogues) and minibatch stddev (R = 4), forward
and forward+backward. Providers: ``ref`` (the eager reference), ``compile`` (torch.compile of the
reference: Inductor fuses epilogues too) and ``fastprogan`` (impl="auto").

On a GPU every resolution 4..1024 and fp32/fp16/bf16 run at the paper's batch, and each result is
appended to ``benchmarks/results/ops.csv`` keyed by the device name, with the path each provider ran,
the bytes the traffic counter attributes to the op and the achieved bandwidth (GB/s).

On a CPU (fp32, resolutions 8..32) fastprogan differs from the reference only in the resampling
convs, and only where ``impl="auto"`` picks the fused 4x4-weight path (N*H*W at or above each op's
``CPU_FUSED_MIN_PIXELS``). So the G and D blocks run at two batches per resolution, the largest one
below the op's threshold (where fastprogan runs the same code as ``ref``: a control) and the
smallest one at or above it (where it runs the fused conv); the ``path`` column says which code each
row ran. The epilogue ops and minibatch stddev run the reference on CPU under ``impl="auto"``
(Triton under the interpreter measures nothing), so their ``fastprogan`` rows are left out there.
Environment overrides: FASTPROGAN_BENCH_RES="8,16", FASTPROGAN_BENCH_DTYPES="fp32,bf16",
FASTPROGAN_BENCH_OPS="g_block", FASTPROGAN_BENCH_PROVIDERS="ref,fastprogan",
FASTPROGAN_BENCH_BATCH_DIV=16 (batch divisor of the non-block ops; CPU default 16), FASTPROGAN_BENCH_CSV=path (empty: no CSV).

Interleaved CPU sweeps (a plain script, not pytest): ``python benchmarks/bench_ops.py --thresholds``
(fused/ref time of both resampling convs per N*H*W: the numbers behind ``CPU_FUSED_MIN_PIXELS``) and
``--weight-build`` (the 4x4 weight construction alone).
"""

from __future__ import annotations

import csv
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastprogan import ops
from fastprogan.ops.conv2d_downscale import CPU_FUSED_MIN_PIXELS as downscale_threshold
from fastprogan.ops.conv2d_downscale import downscale_path
from fastprogan.ops.upscale_conv2d import CPU_FUSED_MIN_PIXELS as upscale_threshold
from fastprogan.ops.upscale_conv2d import upscale_path
from fastprogan.tools import traffic as T

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DEVICE_NAME = torch.cuda.get_device_name() if CUDA else f"cpu ({os.cpu_count()} threads)"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _env_list(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


RESOLUTIONS = [
    int(r) for r in _env_list("FASTPROGAN_BENCH_RES", "4,8,16,32,64,128,256,512,1024" if CUDA else "8,16,32")
]
DTYPE_NAMES = _env_list("FASTPROGAN_BENCH_DTYPES", "fp32,fp16,bf16" if CUDA else "fp32")
OPS = _env_list("FASTPROGAN_BENCH_OPS", "g_epilogue,d_epilogue,g_block,d_block,minibatch_stddev")
PROVIDERS = _env_list("FASTPROGAN_BENCH_PROVIDERS", "ref,compile,fastprogan")
BATCH_DIV = int(os.environ.get("FASTPROGAN_BENCH_BATCH_DIV", "1" if CUDA else "16"))  # non-block ops
CSV_PATH = os.environ.get("FASTPROGAN_BENCH_CSV", str(Path(__file__).parent / "results" / "ops.csv"))

if CUDA:
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 runs are fp32 (precision policy)
    torch.backends.cudnn.allow_tf32 = False


def batch(resolution: int) -> int:
    return max(1, T.BATCH[resolution] // BATCH_DIV)


def _conv_shape(op: str, r: int) -> tuple[str, int, int, int]:
    """(resampling op, C_in, C_out, input side) of the fused conv inside a G/D block at resolution r."""
    if op == "g_block":
        return "upscale_conv2d", T.nf(r // 2), T.nf(r), r // 2
    return "conv2d_downscale", T.nf(r), T.nf(r // 2), r


def batches(op: str, r: int) -> list[int]:
    """The batches to time: the paper's on a GPU; on CPU, block ops straddle the fused threshold."""
    if CUDA or op not in ("g_block", "d_block"):
        return [batch(r)]
    conv, _, _, side = _conv_shape(op, r)
    threshold = upscale_threshold if conv == "upscale_conv2d" else downscale_threshold
    px = side * side  # input pixels per sample
    below = (threshold - 1) // px  # largest batch on the reference path (0: none exists)
    above = -(-threshold // px)  # smallest batch on the fused path
    return [n for n in (below, above) if n >= 1]


def auto_path(op: str, n: int, c_in: int, c_out: int, h: int, w: int) -> str:
    """The path impl="auto" runs for this resampling conv on this machine's device."""
    if op == "upscale_conv2d":
        return upscale_path(n, c_in, c_out, h, w, DEVICE)
    return downscale_path(n, h, w, DEVICE)


def provider_path(op: str, provider: str, r: int, n: int) -> str:
    """Which code a provider runs for this case (the ``path`` column)."""
    if provider != "fastprogan":
        return "compile(ref)" if provider == "compile" else "ref"
    epilogue = "triton" if CUDA else "ref"
    if op in ("g_block", "d_block"):
        conv, c_in, c_out, side = _conv_shape(op, r)
        return f"conv {auto_path(conv, n, c_in, c_out, side, side)} + epilogue {epilogue}"
    return epilogue


# ----------------------------------------------------------------------------------------------------
# Problems: (make_inputs, reference fn, fastprogan fn) per op and resolution


def _t(*shape, dtype, grad=True):
    return torch.randn(shape, device=DEVICE, dtype=dtype).requires_grad_(grad)


def problem(op: str, r: int, dtype: torch.dtype, n: int):
    if op == "g_epilogue":
        c = T.nf(r)
        return (
            lambda: (_t(n, c, r, r, dtype=dtype), _t(c, dtype=torch.float32)),
            lambda x, b: ops.bias_act(x, b, 0.2, True, impl="ref"),
            lambda x, b: ops.bias_act(x, b, 0.2, True),
        )
    if op == "d_epilogue":
        c = T.nf(r)
        return (
            lambda: (_t(n, c, r, r, dtype=dtype), _t(c, dtype=torch.float32)),
            lambda x, b: ops.bias_act(x, b, 0.2, impl="ref"),
            lambda x, b: ops.bias_act(x, b, 0.2),
        )
    if op == "g_block":
        c_in, c_out = T.nf(r // 2), T.nf(r)
        return (
            lambda: (
                _t(n, c_in, r // 2, r // 2, dtype=dtype),
                _t(c_out, c_in, 3, 3, dtype=torch.float32),
                _t(c_out, dtype=torch.float32),
            ),
            T.g_block_ref,
            lambda x, w, b: ops.bias_act(ops.upscale_conv2d(x, w), b, 0.2, True),
        )
    if op == "d_block":
        c, c_out = T.nf(r), T.nf(r // 2)
        return (
            lambda: (
                _t(n, c, r, r, dtype=dtype),
                _t(c, c, 3, 3, dtype=torch.float32),
                _t(c, dtype=torch.float32),
                _t(c_out, c, 3, 3, dtype=torch.float32),
                _t(c_out, dtype=torch.float32),
            ),
            T.d_block_ref,
            lambda x, w1, b1, w2, b2: ops.bias_act(
                ops.conv2d_downscale(ops.bias_act(F.conv2d(x, w1.to(x.dtype), padding=1), b1, 0.2), w2),
                b2,
                0.2,
            ),
        )
    if op == "minibatch_stddev":
        return (
            lambda: (_t(max(n, 4) // 4 * 4, T.nf(4), 4, 4, dtype=dtype),),
            lambda x: ops.minibatch_stddev(x, 4, impl="ref"),
            lambda x: ops.minibatch_stddev(x, 4),
        )
    raise ValueError(op)


def _cases():
    for op in OPS:
        for r in RESOLUTIONS:
            if (op == "minibatch_stddev") != (r == 4) or (op in ("g_block", "d_block") and r < 8):
                continue
            for n in batches(op, r):
                for dtype in DTYPE_NAMES:
                    for mode in ("fwd", "fwd+bwd"):
                        for provider in PROVIDERS:
                            if provider == "fastprogan" and provider_path(op, provider, r, n) == "ref":
                                continue  # the same code as the ref provider (CPU epilogues): nothing to compare
                            yield pytest.param(
                                op, r, n, dtype, mode, provider, id=f"{op}-{r}-n{n}-{dtype}-{mode}-{provider}"
                            )


def _append_csv(row: dict) -> None:
    if not CSV_PATH:
        return
    path = Path(CSV_PATH)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _counted_bytes(make_inputs, fn, mode: str) -> int:
    """Bytes the traffic counter attributes to ``fn`` (meta tensors of the same shapes)."""
    meta = [
        torch.empty(t.shape, device="meta", dtype=t.dtype).requires_grad_(t.requires_grad)
        for t in make_inputs()
    ]

    def run():
        y = fn(*meta)
        if mode == "fwd+bwd":
            y.backward(torch.empty_like(y))

    try:
        return T.count(run).total
    except Exception:  # a path with no meta support (e.g. torch.compile): report no bandwidth
        return 0


@pytest.mark.parametrize("op, resolution, n, dtype_name, mode, provider", list(_cases()))
def test_op(benchmark, op, resolution, n, dtype_name, mode, provider):
    dtype = DTYPES[dtype_name]
    make_inputs, ref_fn, fast_fn = problem(op, resolution, dtype, n)
    path = provider_path(op, provider, resolution, n)
    benchmark.extra_info["path"] = path
    if provider == "fastprogan":
        fn = fast_fn
    elif provider == "ref":
        fn = ref_fn
    else:
        torch._dynamo.reset()
        fn = torch.compile(ref_fn)
    inputs = make_inputs()
    grad = None

    def step():
        y = fn(*inputs)
        if mode == "fwd+bwd":
            y.backward(grad)
        if CUDA:
            torch.cuda.synchronize()

    with torch.no_grad() if mode == "fwd" else torch.enable_grad():
        y = fn(*inputs)  # warm-up (compiles, cuDNN autotune)
    grad = torch.randn_like(y)
    for _ in range(2):
        if mode == "fwd":
            with torch.no_grad():
                step()
        else:
            step()
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    if mode == "fwd":
        with torch.no_grad():
            benchmark(step)
    else:
        benchmark(step)
    # Peak memory of the timed steps (inputs included); CUDA only: the CPU allocator keeps no peak.
    peak_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1) if CUDA else ""
    stats = getattr(benchmark, "stats", None)
    if stats is None or not getattr(stats, "stats", None):
        return  # --benchmark-disable: ran once as a smoke test
    # Counted on the reference's and fastprogan's own graphs; compile's bytes are not observable.
    nbytes = (
        _counted_bytes(make_inputs, ref_fn if provider == "ref" else fast_fn, mode)
        if provider != "compile"
        else 0
    )
    median = stats.stats.median
    benchmark.extra_info.update({"bytes": nbytes, "GB/s": nbytes / median / 1e9 if nbytes else None})
    _append_csv(
        {
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": DEVICE_NAME,
            "torch": torch.__version__,
            "op": op,
            "provider": provider,
            "path": path,
            "resolution": resolution,
            "batch": n,
            "dtype": dtype_name,
            "mode": mode,
            "median_ms": median * 1e3,
            "mean_ms": stats.stats.mean * 1e3,
            "rounds": stats.stats.rounds,
            "bytes_counted": nbytes,
            "gb_per_s": round(nbytes / median / 1e9, 2) if nbytes else "",
            "peak_mem_mb": peak_mb,
        }
    )


# ----------------------------------------------------------------------------------------------------
# Interleaved CPU sweeps (plain script, not pytest): `python benchmarks/bench_ops.py --help`


def _timed(fn, *args) -> float:
    import time

    t0 = time.perf_counter()
    y = fn(*args)
    y.backward(torch.ones_like(y))
    return time.perf_counter() - t0


def sweep_thresholds(channels: int, pixels: list[int], rounds: int) -> list[dict]:
    """Fused / ref forward+backward time of both resampling convs, interleaved, per N*H*W."""
    import statistics

    rows = []
    for p in pixels:
        side = 8 if p <= 1024 else 16  # ProGAN's mid stages; N*H*W is what the rule looks at
        n = max(1, p // (side * side))
        for op, fn in (("upscale_conv2d", ops.upscale_conv2d), ("conv2d_downscale", ops.conv2d_downscale)):
            x = torch.randn(n, channels, side, side, requires_grad=True)
            w = torch.randn(channels, channels, 3, 3, requires_grad=True)
            times: dict[str, list[float]] = {"fused": [], "ref": []}
            for i in range(rounds + 1):  # round 0 warms up
                for impl in ("fused", "ref") if i % 2 else ("ref", "fused"):
                    t = _timed(lambda a, b, impl=impl, fn=fn: fn(a, b, impl=impl), x, w)
                    if i:
                        times[impl].append(t)
            ratios = [f / r for f, r in zip(times["fused"], times["ref"])]
            row = {
                "op": op,
                "channels": channels,
                "n_h_w": n * side * side,
                "shape": f"{n}x{channels}x{side}x{side}",
                "fused_ms": round(statistics.median(times["fused"]) * 1e3, 1),
                "ref_ms": round(statistics.median(times["ref"]) * 1e3, 1),
                "fused/ref": round(statistics.median(ratios), 2),
                "auto": auto_path(op, n, channels, channels, side, side),
            }
            print(row, flush=True)
            rows.append(row)
    return rows


def sweep_weight_build(channels: int, rounds: int) -> None:
    """The 4x4 construction alone, forward and forward+backward, interleaved: today's GEMM vs earlier ones."""
    import statistics
    import time

    from fastprogan.ops.resample_weight import four_shift_sum

    def box_conv(w: torch.Tensor) -> torch.Tensor:  # the construction before the GEMM, for the ratio only
        c_out, c_in = w.shape[:2]
        box = torch.ones(1, 1, 2, 2, dtype=w.dtype)
        return F.conv2d(w.reshape(c_out * c_in, 1, 3, 3), box, padding=1).reshape(c_out, c_in, 4, 4)

    def slices(w: torch.Tensor) -> torch.Tensor:  # pad + four shifted slices (autograd's own backward)
        p = F.pad(w, (1, 1, 1, 1))  # [.., 5, 5]
        return p[..., 1:, 1:] + p[..., :-1, 1:] + p[..., 1:, :-1] + p[..., :-1, :-1]

    builds = {"box-filter conv2d": box_conv, "pad + 4 shifted slices": slices, "GEMM (today)": four_shift_sum}
    w = torch.randn(channels, channels, 3, 3, requires_grad=True)
    res: dict[str, list[list[float]]] = {k: [[], []] for k in builds}
    for i in range(rounds + 1):  # round 0 warms up
        for name, f in builds.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                f(w)
            t1 = time.perf_counter()
            y = f(w)
            y.backward(torch.ones_like(y))
            t2 = time.perf_counter()
            if i:
                res[name][0].append(t1 - t0)
                res[name][1].append(t2 - t1)
    for name, (fw, fb) in res.items():
        print(
            f"{name}: {channels}x{channels} forward {statistics.median(fw) * 1e3:.1f} ms, "
            f"forward+backward {statistics.median(fb) * 1e3:.1f} ms (median of {rounds}, "
            f"{torch.get_num_threads()} threads)"
        )


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Interleaved CPU sweeps of the fused-resampling convs.")
    ap.add_argument("--thresholds", action="store_true", help="fused/ref time per N*H*W, both ops")
    ap.add_argument("--weight-build", action="store_true", help="the 4x4 weight construction alone")
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--pixels", default="64,128,256,512,1024,2048,4096")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.weight_build:
        sweep_weight_build(args.channels, args.rounds)
    if args.thresholds:
        sweep_thresholds(args.channels, [int(p) for p in args.pixels.split(",")], args.rounds)
