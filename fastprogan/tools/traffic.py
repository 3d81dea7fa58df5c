"""Count the memory traffic of ProGAN's G and D blocks, fused (fastprogan's dispatch) vs eager torch.

    python -m fastprogan.tools.traffic [--dtype fp32|bf16|fp16] [--csv PATH] [--top R] [--layers]

(``--top R``: the D step's ops by bytes at resolution R, fused and reference, instead of the tables;
``--layers``: the fused conv kernels' layers at 256-1024, fused kernel vs cuDNN conv + epilogue, and
the D step on them.)

A ``TorchDispatchMode`` adds the bytes of every tensor read and written by each dispatched op: the
DRAM traffic of a one-kernel-per-op execution (no cache reuse between ops). Views and aliases move
nothing and are skipped; allocations (empty*) too. A fastprogan custom op is seen as one op, like any
aten op, plus the scratch traffic its kernels add inside (``INTERNAL_BYTES``: the partial bias sums
of the pixel-norm backward and of lrelu_grad_bias, and the weight-gradient kernel's split partials,
written then read). Everything runs on device="meta": shapes only, no
memory, no kernels (the custom ops' fake implementations run), so every resolution up to 1024x1024 at
the paper's batch sizes costs milliseconds.

Blocks, with the paper's channels nf(R) (512 at 4-32, 256 at 64, 128 at 128, 64 at 256, 32 at 512, 16
at 1024) and the 1-GPU v2 preset's batch per resolution:
- G block at R: x [N, nf(R/2), R/2, R/2] -> nearest 2x up + 3x3 conv -> + bias, lrelu, pixel norm.
  Reference: interpolate, conv2d, add, leaky_relu, pixel_norm_ref as eager ops. Fused: upscale_conv2d
  (path chosen by the CUDA dispatch rule) + bias_act(pixel_norm=True).
- D block at R: x [N, nf(R), R, R] -> 3x3 conv + bias + lrelu -> 3x3 conv + 2x2 avg pool + bias +
  lrelu. Reference: conv2d, add, leaky_relu, conv2d, avg_pool2d, add, leaky_relu. Fused: conv2d +
  bias_act, conv2d_downscale (4x4 stride-2 weights) + bias_act.
- D step at R: the WGAN-GP step on the D block (score = sum of the block's output per sample): D on
  real, fake and the interpolate x_hat, the penalty's create_graph gradient w.r.t. x_hat, and the
  backward of the whole loss (the double backward).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from fastprogan import ops
from fastprogan.ops.upscale_conv2d import upscale_path

RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)
BATCH = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4, 1024: 4}  # 1-GPU v2 preset
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def nf(resolution: int) -> int:
    """The paper's feature maps at a resolution: min(16384 / R, 512)."""
    return min(16384 // resolution, 512)


def _nbytes(t: torch.Tensor) -> int:
    # A broadcast (expanded) view reads its storage once, not once per element.
    return min(t.numel() * t.element_size(), t.untyped_storage().nbytes())


def _pixel_norm_backward_scratch(args, outputs) -> int:
    from fastprogan.ops._kernels import load_kernels

    _, x, _, _, _ = args
    tiles = load_kernels("bias_act")
    tile, _ = tiles.pixel_norm_tile(x.shape[1])
    n, s = (1, x.shape[0]) if x.ndim == 2 else (x.shape[0], x.shape[2] * x.shape[3])
    rows = n * -(-s // tile.block_p)
    return 2 * rows * x.shape[1] * 4  # partial sums written, then read by the second stage


def _lrelu_grad_bias_scratch(args, outputs) -> int:
    from fastprogan.ops._kernels import load_kernels

    _, out, _ = args
    rows = load_kernels("bias_act").lrelu_grad_bias_partial_rows(out)
    return 2 * rows * out.shape[1] * outputs[1].element_size()  # partial sums written, then read


def _split_partials_scratch(tiles: int, programs_per_split: int, partial_elems: int, x, target) -> int:
    from fastprogan.ops._kernels import load_kernels

    kernels = load_kernels("conv2d_bias_act")
    splits = kernels.weight_grad_splits(
        tiles, programs_per_split, partial_elems, x.numel() * x.element_size(), target
    )
    return splits * partial_elems * 4


def _weight_grad_bits_scratch(args, outputs) -> int:
    """The weight-gradient kernel's fp32 partials (written, then read by the split sum; bias partials
    included) and the [K, K, C_in, C_out] -> [C_out, C_in, K, K] copy of the summed weight gradient."""
    from fastprogan.ops._kernels import load_kernels

    g, _, x, _, ksize, _, _ = args
    kernels = load_kernels("conv2d_bias_act")
    c_in, c_out = x.shape[1], g.shape[1]
    tile = kernels.wgrad_tile(c_in, c_out)
    tiles = -(-(g.shape[0] * g.shape[2] * g.shape[3]) // tile.block_m)
    taps, ci_blocks = ksize * ksize, -(-c_in // tile.block_k)
    elems = (taps * c_in + 1) * c_out
    partials = _split_partials_scratch(tiles, taps * ci_blocks, elems, x, kernels.WGRAD_TARGET_PROGRAMS)
    return 2 * partials + 2 * taps * c_in * c_out * outputs[0].element_size()


INTERNAL_BYTES: dict[str, Callable] = {
    "fastprogan.bias_act_pixel_norm_backward.default": _pixel_norm_backward_scratch,
    "fastprogan.lrelu_grad_bias.default": _lrelu_grad_bias_scratch,
    "fastprogan.conv_weight_grad_bits.default": _weight_grad_bits_scratch,
}
NO_DATA_OPS = {
    "aten.empty.memory_format",
    "aten.empty_like.default",
    "aten.empty_strided.default",
    "aten.new_empty.default",
}


class TrafficCounter(TorchDispatchMode):
    """Bytes read and written per dispatched op (views/aliases and allocations skipped)."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[str, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func)
        schema = func._schema
        if any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns):
            return out  # a view: no data moves
        if name in NO_DATA_OPS:
            return out
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        read = sum(_nbytes(t) for t in inputs)
        written = sum(_nbytes(t) for t in outputs)
        if name in INTERNAL_BYTES:
            read += INTERNAL_BYTES[name](args, out)
        self.rows.append((name, read, written))
        return out

    @property
    def total(self) -> int:
        return sum(r + w for _, r, w in self.rows)


def count(fn: Callable[[], object]) -> TrafficCounter:
    counter = TrafficCounter()
    with counter:
        fn()
    return counter


def _leaf(*shape, dtype=torch.float32, grad=True):
    return torch.empty(shape, device="meta", dtype=dtype).requires_grad_(grad)


# ----------------------------------------------------------------------------------------------------
# Blocks


def g_block_inputs(resolution: int, dtype: torch.dtype):
    n, c_in, c_out, h = BATCH[resolution], nf(resolution // 2), nf(resolution), resolution // 2
    return _leaf(n, c_in, h, h, dtype=dtype), _leaf(c_out, c_in, 3, 3), _leaf(c_out)


def cuda_upscale_path(x, w) -> str:
    """The resampling path ``upscale_conv2d(impl="auto")`` takes for these tensors on a GPU."""
    backward = x.requires_grad or w.requires_grad
    return upscale_path(x.shape[0], w.shape[1], w.shape[0], x.shape[2], x.shape[3], "cuda", x.dtype, backward)


def g_block_ref(x, w, b):
    h = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w.to(x.dtype), padding=1)
    h = F.leaky_relu(h + b.to(x.dtype).reshape(1, -1, 1, 1), 0.2)
    return ops.pixel_norm_ref(h)


def g_block_fused(x, w, b, resample: str | None = None):
    resample = resample or cuda_upscale_path(x, w)
    h = ops.upscale_conv2d(x, w, impl=resample)
    return ops.bias_act(h, b, 0.2, pixel_norm=True, impl="triton")


def d_block_params(resolution: int):
    c, c_out = nf(resolution), nf(resolution // 2)
    return _leaf(c, c, 3, 3), _leaf(c), _leaf(c_out, c, 3, 3), _leaf(c_out)


def d_block_ref(x, w1, b1, w2, b2):
    h = F.leaky_relu(F.conv2d(x, w1.to(x.dtype), padding=1) + b1.to(x.dtype).reshape(1, -1, 1, 1), 0.2)
    h = F.avg_pool2d(F.conv2d(h, w2.to(x.dtype), padding=1), 2)
    return F.leaky_relu(h + b2.to(x.dtype).reshape(1, -1, 1, 1), 0.2)


def d_block_fused(x, w1, b1, w2, b2):
    h = ops.bias_act(F.conv2d(x, w1.to(x.dtype), padding=1), b1, 0.2, impl="triton")
    return ops.bias_act(ops.conv2d_downscale(h, w2, impl="fused"), b2, 0.2, impl="triton")


def d_block_fused_conv(x, w1, b1, w2, b2):
    """The D block on the fused conv kernels (conv2d_bias_act, conv2d_downscale_bias_act)."""
    h = ops.conv2d_bias_act(x, w1, b1, 0.2, impl="triton")
    return ops.conv2d_downscale_bias_act(h, w2, b2, 0.2, impl="triton")


def g_block2_inputs(resolution: int, dtype: torch.dtype):
    """G's whole block at R: x [N, nf(R/2), R/2, R/2], conv0_up's and conv1's weights and biases."""
    n, c_in, c = BATCH[resolution], nf(resolution // 2), nf(resolution)
    x = _leaf(n, c_in, resolution // 2, resolution // 2, dtype=dtype)
    return x, _leaf(c, c_in, 3, 3), _leaf(c), _leaf(c, c, 3, 3), _leaf(c)


def g_block2(impl: str) -> Callable:
    """G's block (conv0_up: 2x + 3x3 + lrelu + pixel norm, then conv1: 3x3 + lrelu + pixel norm) on
    the fused conv ops with ``impl`` ("triton": the fused kernels; "cudnn": conv + Triton epilogue)."""

    def block(x, w0, b0, w1, b1):
        h = ops.upscale_conv2d_bias_act(x, w0, b0, 0.2, pixel_norm=True, impl=impl)
        return ops.conv2d_bias_act(h, w1, b1, 0.2, pixel_norm=True, impl=impl)

    return block


# Per-layer rows of the fused conv kernels (issue 11): the 256-1024 layers they are built for.
LAYER_RESOLUTIONS = (256, 512, 1024)
LAYERS = {
    # name: (op, C_in(R), C_out(R), pixel_norm)
    "G conv0_up (2x + 3x3 + lrelu + pixel norm)": (
        "upscale_conv2d_bias_act",
        lambda r: nf(r // 2),
        nf,
        True,
    ),
    "G conv (3x3 + lrelu + pixel norm)": ("conv2d_bias_act", nf, nf, True),
    "D conv (3x3 + lrelu)": ("conv2d_bias_act", nf, nf, False),
    "D conv1_down (3x3 + pool + lrelu)": ("conv2d_downscale_bias_act", nf, lambda r: nf(r // 2), False),
}


def layer_rows(dtype: torch.dtype = torch.float32, resolutions=LAYER_RESOLUTIONS) -> list[dict]:
    """Bytes of each fused-conv layer (fwd, fwd+bwd with weight gradients): the fused kernel
    ("triton") vs today's cuDNN conv + Triton epilogue ("cudnn"), at the preset batch."""
    rows = []
    for r in resolutions:
        for name, (op, c_in, c_out, pn) in LAYERS.items():
            ci, co = c_in(r), c_out(r)

            side = r // 2 if op == "upscale_conv2d_bias_act" else r  # conv0_up's input is at R/2

            def make(ci=ci, co=co, r=r, side=side):
                return _leaf(BATCH[r], ci, side, side, dtype=dtype), _leaf(co, ci, 3, 3), _leaf(co)

            fn = getattr(ops, op)
            kw = {"pixel_norm": True} if pn else {}
            res = {
                impl: fwd_and_fwd_bwd(
                    lambda x, w, b, impl=impl, fn=fn, kw=kw: fn(x, w, b, 0.2, **kw, impl=impl), make
                )
                for impl in ("cudnn", "triton")
            }
            rows.append(
                {
                    "resolution": r,
                    "batch": BATCH[r],
                    "layer": name,
                    "c_in": ci,
                    "c_out": co,
                    "fwd_cudnn": res["cudnn"][0],
                    "fwd_triton": res["triton"][0],
                    "fwdbwd_cudnn": res["cudnn"][1],
                    "fwdbwd_triton": res["triton"][1],
                }
            )
    return rows


def layers_markdown(rows: list[dict], dtype_name: str) -> str:
    out = [
        f"Fused conv kernels per layer, {dtype_name}, MB moved: fused kernel / cuDNN conv + Triton epilogue",
        "",
        "| R | N | layer | C_in->C_out | fwd cuDNN+epi | fwd fused | ratio | fwd+bwd cuDNN+epi | fwd+bwd fused | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['resolution']} | {r['batch']} | {r['layer']} | {r['c_in']}->{r['c_out']} | "
            f"{_mb(r['fwd_cudnn'])} | {_mb(r['fwd_triton'])} | {r['fwd_triton'] / r['fwd_cudnn']:.2f} | "
            f"{_mb(r['fwdbwd_cudnn'])} | {_mb(r['fwdbwd_triton'])} | {r['fwdbwd_triton'] / r['fwdbwd_cudnn']:.2f} |"
        )
    dtype = DTYPES[dtype_name]
    out += [
        "",
        f"G block (conv0_up + conv1, pixel norm) fwd+bwd, {dtype_name}, MB: fused conv kernels vs cuDNN + epilogue",
        "",
        "| R | cuDNN + epilogue | fused convs | ratio |",
        "|---|---|---|---|",
    ]
    for res in sorted({r["resolution"] for r in rows}):
        make = lambda res=res: g_block2_inputs(res, dtype)
        today, fused = (fwd_and_fwd_bwd(g_block2(impl), make)[1] for impl in ("cudnn", "triton"))
        out.append(f"| {res} | {_mb(today)} | {_mb(fused)} | {fused / today:.2f} |")
    out += [
        "",
        f"WGAN-GP D step on the D block, {dtype_name}, MB: fused conv kernels vs today's fused path",
        "",
    ]
    out += [
        "| R | today (cuDNN + epilogue) | fused convs | ratio | eager reference |",
        "|---|---|---|---|---|",
    ]
    for res in sorted({r["resolution"] for r in rows}):
        dt = d_step(d_block_fused, res, dtype)
        dc = d_step(d_block_fused_conv, res, dtype)
        dr = d_step(d_block_ref, res, dtype)
        out.append(f"| {res} | {_mb(dt)} | {_mb(dc)} | {dc / dt:.2f} | {_mb(dr)} |")
    return "\n".join(out)


def fwd_and_fwd_bwd(block, make_inputs) -> tuple[int, int]:
    fwd = count(lambda: block(*make_inputs()))
    inputs = make_inputs()
    y = None

    def run():
        nonlocal y
        y = block(*inputs)
        y.backward(grad)

    grad = torch.empty(block(*make_inputs()).shape, device="meta", dtype=inputs[0].dtype)
    return fwd.total, count(run).total


def d_step(block, resolution: int, dtype: torch.dtype) -> int:
    """Bytes of one WGAN-GP D step (real, fake, penalty with double backward) on the D block."""
    return d_step_counter(block, resolution, dtype).total


def d_step_counter(block, resolution: int, dtype: torch.dtype) -> TrafficCounter:
    """The counter (per-op rows) of one WGAN-GP D step on the D block."""
    n, c = BATCH[resolution], nf(resolution)
    params = d_block_params(resolution)
    real = _leaf(n, c, resolution, resolution, dtype=dtype, grad=False)
    fake = _leaf(n, c, resolution, resolution, dtype=dtype, grad=False)
    alpha = _leaf(n, 1, 1, 1, dtype=dtype, grad=False)

    def score(x):
        return block(x, *params).flatten(1).sum(1)  # [N]

    def step():
        d_real, d_fake = score(real), score(fake)
        x_hat = (alpha * real + (1 - alpha) * fake).detach().requires_grad_()
        (grad,) = torch.autograd.grad(score(x_hat).sum(), x_hat, create_graph=True)
        penalty = (grad.flatten(1).norm(dim=1) - 1).square().mean()
        loss = d_fake.mean() - d_real.mean() + 10.0 * penalty + 1e-3 * d_real.square().mean()
        loss.backward()

    return count(step)


# ----------------------------------------------------------------------------------------------------
# Tables


def measure(dtype: torch.dtype = torch.float32, resolutions=RESOLUTIONS) -> list[dict]:
    rows = []
    for r in resolutions:
        g_inputs = lambda r=r: g_block_inputs(r, dtype)
        g_ref = fwd_and_fwd_bwd(g_block_ref, g_inputs)
        g_fused = fwd_and_fwd_bwd(g_block_fused, g_inputs)
        g_weights = fwd_and_fwd_bwd(lambda x, w, b: g_block_fused(x, w, b, "fused"), g_inputs)
        g_upsample = fwd_and_fwd_bwd(lambda x, w, b: g_block_fused(x, w, b, "ref"), g_inputs)

        def d_inputs(r=r):
            return (_leaf(BATCH[r], nf(r), r, r, dtype=dtype), *d_block_params(r))

        d_ref = fwd_and_fwd_bwd(d_block_ref, d_inputs)
        d_fused = fwd_and_fwd_bwd(d_block_fused, d_inputs)
        step_ref, step_fused = d_step(d_block_ref, r, dtype), d_step(d_block_fused, r, dtype)
        x, w, _ = g_inputs()
        rows.append(
            {
                "resolution": r,
                "batch": BATCH[r],
                "c_in": nf(r // 2),
                "c_out": nf(r),
                "g_resample": cuda_upscale_path(x, w),
                "g_fwd_ref": g_ref[0],
                "g_fwd_fused": g_fused[0],
                "g_fwdbwd_ref": g_ref[1],
                "g_fwdbwd_fused": g_fused[1],
                "g_fwdbwd_fused_weights": g_weights[1],
                "g_fwdbwd_upsample_conv": g_upsample[1],
                "d_fwd_ref": d_ref[0],
                "d_fwd_fused": d_fused[0],
                "d_fwdbwd_ref": d_ref[1],
                "d_fwdbwd_fused": d_fused[1],
                "d_step_ref": step_ref,
                "d_step_fused": step_fused,
            }
        )
    return rows


def _mb(b: int) -> str:
    return f"{b / 1e6:,.0f}"


def markdown(rows: list[dict], dtype_name: str) -> str:
    out = [
        f"G block (upscale conv + bias + lrelu + pixel norm), {dtype_name}, MB moved, fused / eager reference",
        "",
        "| R | N | C_in->C_out | resample path | fwd ref | fwd fused | ratio | fwd+bwd ref | fwd+bwd fused | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['resolution']} | {r['batch']} | {r['c_in']}->{r['c_out']} | {r['g_resample']} | "
            f"{_mb(r['g_fwd_ref'])} | {_mb(r['g_fwd_fused'])} | {r['g_fwd_fused'] / r['g_fwd_ref']:.2f} | "
            f"{_mb(r['g_fwdbwd_ref'])} | {_mb(r['g_fwdbwd_fused'])} | {r['g_fwdbwd_fused'] / r['g_fwdbwd_ref']:.2f} |"
        )
    out += [
        "",
        "G block resampling paths (fwd+bwd MB, fused epilogue in both): 4x4 fused weights vs upsample + 3x3 conv",
        "",
        "| R | fused weights | upsample + conv | weights / upsample | chosen |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        fw, up = r["g_fwdbwd_fused_weights"], r["g_fwdbwd_upsample_conv"]
        out.append(f"| {r['resolution']} | {_mb(fw)} | {_mb(up)} | {fw / up:.2f} | {r['g_resample']} |")
    out += [
        "",
        f"D block (conv + conv-downscale + bias + lrelu) and WGAN-GP D step on it, {dtype_name}, MB",
        "",
        "| R | N | C | fwd ratio | fwd+bwd ref | fwd+bwd fused | ratio | D step ref | D step fused | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['resolution']} | {r['batch']} | {nf(r['resolution'])}->{nf(r['resolution'] // 2)} | "
            f"{r['d_fwd_fused'] / r['d_fwd_ref']:.2f} | {_mb(r['d_fwdbwd_ref'])} | {_mb(r['d_fwdbwd_fused'])} | "
            f"{r['d_fwdbwd_fused'] / r['d_fwdbwd_ref']:.2f} | {_mb(r['d_step_ref'])} | {_mb(r['d_step_fused'])} | "
            f"{r['d_step_fused'] / r['d_step_ref']:.2f} |"
        )
    return "\n".join(out)


def top_ops(resolution: int, dtype: torch.dtype, limit: int = 12) -> str:
    """The D step's dispatched ops grouped by name, largest first, for both paths (where bytes go)."""
    out = []
    for name, block in (("fused", d_block_fused), ("reference", d_block_ref)):
        counter = d_step_counter(block, resolution, dtype)
        groups: dict[str, list[int]] = {}
        for op, read, written in counter.rows:
            g = groups.setdefault(op, [0, 0, 0])
            g[0], g[1], g[2] = g[0] + 1, g[1] + read, g[2] + written
        out += [
            f"D step at {resolution}x{resolution}, {name}: {_mb(counter.total)} MB",
            "",
            "| op | calls | read MB | written MB |",
            "|---|---|---|---|",
        ]
        ranked = sorted(groups.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))
        out += [f"| {op} | {k} | {_mb(r)} | {_mb(w)} |" for op, (k, r, w) in ranked[:limit]]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument(
        "--top",
        type=int,
        metavar="R",
        help="instead of the tables: the D step's ops by bytes at resolution R, fused and reference",
    )
    parser.add_argument(
        "--layers",
        action="store_true",
        help="instead of the tables: the fused conv kernels per layer (256-1024)",
    )
    args = parser.parse_args(argv)
    if args.layers:
        print(layers_markdown(layer_rows(DTYPES[args.dtype]), args.dtype))
        return 0
    if args.top:
        print(top_ops(args.top, DTYPES[args.dtype]))
        return 0
    rows = measure(DTYPES[args.dtype])
    print(markdown(rows, args.dtype))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
