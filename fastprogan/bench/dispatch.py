"""The dispatch table: time every candidate of every per-shape choice ``impl="auto"`` makes.

Choices are entries of :data:`DISPATCH_CHOICES` (op name -> factory(session) -> list of
:class:`Choice`): today the resampling convs' "fused" (4x4-weight stride-2 conv) vs "ref" (upsample +
conv / conv + pool) at every resolution's layer shape, per dtype, for a forward only (``backward=0``:
G under no_grad in the D step, generation) and a forward + backward (``backward=1``: training); the
fused conv kernels' "triton" vs "cudnn" (cuDNN conv + Triton epilogue) per layer kind, forward +
backward, from ``conv2d_bias_act.candidates`` (docs/benchmarks.md). ``finish`` writes the winners as
``dispatch_table.json`` in :mod:`fastprogan.ops.dispatch_table`'s format, with keys from its
``shape_key``, so the ops read exactly what the bench wrote.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastprogan import ops
from fastprogan.bench import env, timing
from fastprogan.bench.ops import make_call
from fastprogan.bench.registry import Registry
from fastprogan.bench.runner import DTYPES, Session, Skipped, Task, attempt, spread
from fastprogan.bench.shapes import QUICK_BATCH, QUICK_CHANNELS, batch_for, nf, resolutions
from fastprogan.ops import dispatch_table


@dataclass
class Choice:
    """One per-shape decision: the table key, the candidates (name -> call builder) and the inputs."""

    op: str
    key: str
    resolution: int
    dtype: str
    backward: bool
    shape: str
    inputs: Callable[[torch.device], list[torch.Tensor]]
    candidates: dict[str, Callable[..., object]]
    cuda_only: bool = False  # a candidate is a Triton kernel with no CPU path (skipped off CUDA)


ChoiceFactory = Callable[[Session], list[Choice]]
DISPATCH_CHOICES: Registry[ChoiceFactory] = Registry("dispatch choice")


def _resample_choices(op: str, session: Session) -> list[Choice]:
    quick = session.options.quick
    out = []
    for dtype_name in session.dtypes(("fp32",) if not session.cuda else ("bf16", "fp32", "fp16")):
        dtype = DTYPES[dtype_name]
        for r in spread([r for r in resolutions(quick, session.options.resolutions) if r >= 8]):
            n = QUICK_BATCH if quick else batch_for(r)
            if op == "upscale_conv2d":  # x [N, nf(R/2), R/2, R/2] -> [N, nf(R), R, R]
                c_in, c_out, h = (
                    (QUICK_CHANNELS, QUICK_CHANNELS, r // 2) if quick else (nf(r // 2), nf(r), r // 2)
                )
                fn = ops.upscale_conv2d
            else:  # x [N, nf(R), R, R] -> [N, nf(R/2), R/2, R/2]
                c_in, c_out, h = (QUICK_CHANNELS, QUICK_CHANNELS, r) if quick else (nf(r), nf(r // 2), r)
                fn = ops.conv2d_downscale
            for backward in (True, False):
                key = dispatch_table.shape_key(
                    n=n, c_in=c_in, c_out=c_out, h=h, w=h, dtype=dtype, backward=backward
                )

                def inputs(dev, n=n, c_in=c_in, c_out=c_out, h=h, dtype=dtype, grad=backward):
                    x = torch.randn(n, c_in, h, h, device=dev, dtype=dtype).requires_grad_(grad)
                    return [x, torch.randn(c_out, c_in, 3, 3, device=dev).requires_grad_(grad)]

                candidates = {
                    path: (lambda x, w, path=path, fn=fn: fn(x, w, impl=path)) for path in ("fused", "ref")
                }
                shape = f"{n}x{c_in}x{h}x{h}->{c_out}"
                out.append(Choice(op, key, r, dtype_name, backward, shape, inputs, candidates))
    return out


DISPATCH_CHOICES.register("upscale_conv2d", "fused 4x4 transposed conv vs nearest upsample + 3x3 conv")(
    lambda session: _resample_choices("upscale_conv2d", session)
)
DISPATCH_CHOICES.register("conv2d_downscale", "fused 4x4 stride-2 conv vs 3x3 conv + 2x2 avg pool")(
    lambda session: _resample_choices("conv2d_downscale", session)
)


def _fused_conv_choices(name: str, session: Session) -> list[Choice]:
    """The fused conv kernels' per-shape choice, "triton" (the fused kernel) vs "cudnn" (cuDNN conv +
    Triton epilogue), from ``conv2d_bias_act.candidates`` and keyed by its ``shape_key_for`` (no
    backward flag: the choice holds for training, so it is timed forward + backward); shapes where
    the kernel has no config (C_out > 128) have one candidate and are left out."""
    from fastprogan.bench.ops import fused_conv_layer

    fused = importlib.import_module("fastprogan.ops.conv2d_bias_act")  # the module (ops exports the op)

    quick = session.options.quick
    out = []
    for dtype_name in session.dtypes(("fp32",) if not session.cuda else ("bf16", "fp32", "fp16")):
        dtype = DTYPES[dtype_name]
        for r in spread([r for r in resolutions(quick, session.options.resolutions) if r >= 8]):
            op, n, c_in, c_out, h, pixel_norm = fused_conv_layer(name, r, quick)

            def inputs(dev, n=n, c_in=c_in, c_out=c_out, h=h, dtype=dtype):
                x = torch.randn(n, c_in, h, h, device=dev, dtype=dtype).requires_grad_()
                w = torch.randn(c_out, c_in, 3, 3, device=dev).requires_grad_()
                return [x, w, torch.randn(c_out, device=dev).requires_grad_()]

            meta = inputs(torch.device("meta"))
            names = sorted(fused.candidates(op, *meta, pixel_norm=pixel_norm))
            if len(names) < 2:
                continue
            candidates = {
                impl: (
                    lambda x, w, b, impl=impl, op=op, pn=pixel_norm: fused.candidates(op, x, w, b, pn)[impl]()
                )
                for impl in names
            }
            key = fused.shape_key_for(meta[0], meta[1], pixel_norm)
            shape = f"{n}x{c_in}x{h}x{h}->{c_out}"
            out.append(Choice(op, key, r, dtype_name, True, shape, inputs, candidates, cuda_only=True))
    return out


for _name, _doc in (
    ("conv2d_bias_act", "D conv: fused 3x3 conv kernel vs cuDNN conv + Triton epilogue"),
    ("conv2d_bias_act_pixel_norm", "G conv (pixel norm): fused kernel vs cuDNN conv + Triton epilogue"),
    ("conv2d_downscale_bias_act", "D conv1_down: fused stride-2 4x4 kernel vs cuDNN conv + epilogue"),
    ("upscale_conv2d_bias_act", "G conv0_up: fused parity kernel vs upscale conv + Triton epilogue"),
):
    DISPATCH_CHOICES.register(_name, _doc)(lambda session, name=_name: _fused_conv_choices(name, session))


def measure_choice(session: Session, choice: Choice) -> list[dict]:
    """One row per candidate, then the winner (lowest median) in the ``detail`` of every row."""
    if choice.cuda_only and not session.cuda:
        raise Skipped("Triton kernel candidates: off CUDA only the interpreter runs them, never timed")
    device = session.device
    mode = "fwd+bwd" if choice.backward else "fwd"
    warmup, reps = (1, 3) if session.options.quick else (3, 20)
    rows = []
    for name, fn in choice.candidates.items():
        t = timing.time_calls(
            make_call(fn, choice.inputs(device), mode), device, warmup=warmup, reps=reps, max_s=1.0
        )
        rows.append(
            {"provider": name, "status": "ok", "median_ms": t.median_ms, "iqr_ms": t.iqr_ms, "reps": t.reps}
        )
    best = min(rows, key=lambda row: row["median_ms"])["provider"]
    for row in rows:
        row["detail"] = f"key {choice.key}; winner {best}"
    return rows


def tasks(session: Session) -> list[Task]:
    """Every choice, bf16 first; each task times all candidates of one key."""
    out = []
    choices = [c for entry in DISPATCH_CHOICES for c in entry.factory(session)]
    order = {d: i for i, d in enumerate(("bf16", "fp32", "fp16"))}
    choices.sort(key=lambda c: (order.get(c.dtype, 9), not c.backward))  # stable: keeps the spread order
    for c in choices:
        identity = {
            "name": c.op,
            "resolution": c.resolution,
            "dtype": c.dtype,
            "mode": "fwd+bwd" if c.backward else "fwd",
            "batch": c.shape.split("x")[0],
            "shape": c.shape,
        }
        out.append(
            Task(
                "dispatch",
                f"dispatch {c.op} {c.dtype} {identity['mode']} {c.resolution}px",
                (0.3 if session.cuda else 0.05) * len(c.candidates),
                lambda c=c, ident=identity: attempt(ident, lambda: measure_choice(session, c)),
                kind="dispatch",
            )
        )
    return out


def table_from_rows(rows: list[dict[str, str]], device: str) -> dict:
    """The dispatch table (format of :mod:`fastprogan.ops.dispatch_table`) from the measured rows."""
    entries: dict[str, dict[str, str]] = {}
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for row in rows:
        if row["measure"] != "dispatch" or row["status"] != "ok":
            continue
        key = row["detail"].split(";")[0].removeprefix("key ").strip()
        ms = float(row["median_ms"])
        slot = (row["name"], key)
        if slot not in best or ms < best[slot][0]:
            best[slot] = (ms, row["provider"])
    for (op, key), (_, winner) in sorted(best.items()):
        entries.setdefault(op, {})[key] = winner
    versions = env.versions()
    return {
        "format": dispatch_table.FORMAT_VERSION,
        "device": device,
        "torch": versions["torch"],
        "triton": versions["triton"],
        "entries": entries,
    }


def finish(session: Session) -> None:
    """Write dispatch_table.json (validated by the reader's own check before it is written)."""
    table = table_from_rows(session.writer.rows, session.device_name)
    dispatch_table.validate_table(table, "dispatch_table.json")
    path = session.options.out / "dispatch_table.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    n = sum(len(v) for v in table["entries"].values())
    slug = dispatch_table.device_slug(session.device_name)
    session.log(f"dispatch: {n} entries -> {path} (commit as fastprogan/ops/dispatch_tables/{slug}.json)")
