"""Count the ops one training iteration dispatches, per resolution: ``python -m fastprogan.tools.dispatch``.

One iteration = what the trainer runs per minibatch with ``d_repeats=1``: one D step with the gradient
penalty, the G_ema update and one G step, latents and mixing factors drawn inside. Every op that reaches
the dispatcher below autograd is counted once (a ``TorchDispatchMode``): aten ops, views included, and
each fastprogan custom op as one op (its Triton launch). On a GPU each costs the host roughly 5-30 us,
so the count is the host-overhead floor of the eager path (docs/performance.md).

Not counted: the ``aten.detach`` calls that exist only because a dispatch mode is active. Autograd
saves and unpacks the outputs of custom autograd functions (every ``fastprogan::`` op with a backward)
with ``TensorImpl::shallow_copy_and_detach``, a C++ metadata copy that never enters the dispatcher;
while a mode is active torch routes that copy to the mode as ``aten.detach`` (75 per iteration at 16x16,
none in a real run: the torch profiler records none). They reach the mode without passing through the
dispatcher, which is how :class:`DispatchCounter` tells them apart (``.not_dispatched`` keeps them).

By default the networks live on the ``meta`` device with ``impl="triton"``: shapes only, no arithmetic,
the same ops a CUDA run dispatches (fused Adam is counted in its foreach form there, which dispatches a
few more ops; torch has no fused Adam on meta). On meta the networks have the paper's widths (free:
nothing is allocated), because widths decide the path: with ``impl="triton"`` the 3x3 convs of layers
with at most 128 output channels take the fused Triton conv kernels (ops/conv2d_bias_act.py), which a
CUDA run's ``impl="auto"`` picks only where its dispatch table or roofline says they win; with the
paper's widths the counted resolutions (<= 64) run cuDNN + the Triton epilogues, as a CUDA run does.
``--device cpu --impl ref`` counts the CPU trainer's own path (narrow networks: widths do not change
that count, and they cost real arithmetic there).

``--api steps`` counts the step functions as the trainer called them before the PhaseRunner (host-side
draws moved with ``.to``; run it on an older checkout for the "before" column); the default
``--api runner`` counts :func:`fastprogan.training.graphs.build_training_iteration`, today's eager path.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def _through_dispatcher() -> bool:
    """Whether the op now reaching the mode came through the dispatcher.

    The dispatcher's Python-key fallback excludes the ``PythonTLSSnapshot`` key while it runs the mode;
    a call the mode receives straight from C++ (``shallow_copy_and_detach`` under a mode) does not.
    """
    return torch._C._dispatch_tls_is_dispatch_key_excluded(torch._C.DispatchKey.PythonTLSSnapshot)


class DispatchCounter(TorchDispatchMode):
    """Counts dispatched ops by name (``aten.mul``, ``fastprogan.bias_act``, ...).

    ``counts``: the ops that went through the dispatcher (what a run without the mode dispatches);
    ``not_dispatched``: the calls only the mode's presence creates (module docstring), by name.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self.not_dispatched: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        counts = self.counts if _through_dispatcher() else self.not_dispatched
        counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def count_as_fused(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """On ``meta`` (no fused Adam there): run ``opt.step`` uncounted and count what fused Adam dispatches
    on CPU and CUDA instead (the step-count ``_foreach_add_``, ``_fused_adam_`` and the two profiler
    markers of ``Optimizer.step``)."""
    from torch.utils._python_dispatch import _disable_current_modes, _get_current_dispatch_mode

    inner = opt.step

    def step(*args, **kwargs):
        mode = _get_current_dispatch_mode()
        with _disable_current_modes():
            out = inner(*args, **kwargs)
        if isinstance(mode, DispatchCounter):
            for name in ("aten._foreach_add_", "aten._fused_adam_"):
                mode.counts[name] += 1
            mode.counts["profiler._record_function_enter_new"] += 1
            mode.counts["profiler._record_function_exit"] += 1
        return out

    opt.step = step  # type: ignore[method-assign]
    return opt


def count_ops(fn: Callable[[], object]) -> DispatchCounter:
    """Run ``fn`` once under a :class:`DispatchCounter` and return it."""
    counter = DispatchCounter()
    with counter:
        fn()
    return counter


def _fused_on_meta(opt: torch.optim.Optimizer, device: torch.device) -> torch.optim.Optimizer:
    return count_as_fused(opt) if device.type == "meta" else opt


def _iteration(args: argparse.Namespace, resolution: int) -> Callable[[], None]:
    """One training iteration at ``resolution`` (built, warmed up once), as a zero-argument callable."""
    from fastprogan.training.config import TrainingConfig
    from fastprogan.training.ema import make_ema
    from fastprogan.training.networks import build_discriminator, build_generator
    from fastprogan.training.precision import resolve_precision

    device = torch.device(args.device)
    meta = device.type == "meta"
    config = TrainingConfig.from_preset(
        "v2-1gpu",
        resolution=args.max_resolution,
        fmap_base=args.fmap_base or (8192 if meta else 1024),
        fmap_max=args.fmap_max or (512 if meta else 8),
        impl=args.impl,
        precision=args.precision,
    )
    # The policy decides autocast and the scaler; meta tensors autocast like CPU ones.
    policy = resolve_precision(args.precision, torch.device("cpu" if device.type == "meta" else device))
    channels, n = 3, args.batch
    torch.manual_seed(0)
    G = build_generator(config, channels, policy.pixelnorm_eps).to(device)
    D = build_discriminator(config, channels).to(device)
    G_ema = make_ema(G)
    lod = float(config.resolution.bit_length() - resolution.bit_length())
    if args.fade:
        lod += 0.5  # halfway through the fade from resolution / 2
    reals = torch.zeros(n, channels, resolution, resolution, device=device)

    if args.api == "steps":
        from fastprogan.training import steps

        make = getattr(steps, "make_optimizer", None)

        def opt(m: torch.nn.Module) -> torch.optim.Optimizer:
            if make is not None:
                return _fused_on_meta(make(m.parameters(), config, device), device)
            # The trainer before make_optimizer: torch's default Adam (a per-parameter loop on CPU and
            # meta; torch picks the foreach form on CUDA: --old-adam foreach).
            kind = {"foreach": True} if args.old_adam == "foreach" else {}
            return torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.0, 0.99), eps=1e-8, **kind)

        from fastprogan.training.ema import update_ema

        ctx = steps.StepContext(
            G, D, opt(G), opt(D), policy.make_scaler(), policy.make_scaler(), policy, config
        )
        gen = torch.Generator()

        def run() -> None:
            z = torch.randn(n, G.latent_size, generator=gen)[0::1].to(device)
            u = torch.rand(n, 1, 1, 1, generator=gen)[0::1].to(device)
            steps.discriminator_step(ctx, reals, z, u, lod)
            update_ema(G_ema, G, config.ema_beta)
            steps.generator_step(ctx, torch.randn(n, G.latent_size, generator=gen)[0::1].to(device), lod)

    else:
        from fastprogan.training.graphs import build_training_iteration
        from fastprogan.training.steps import make_optimizer

        step = build_training_iteration(
            G,
            D,
            _fused_on_meta(make_optimizer(G.parameters(), config, device), device),
            _fused_on_meta(make_optimizer(D.parameters(), config, device), device),
            policy,
            config,
            lod,
            minibatch=n,
            G_ema=G_ema,
            seed=0,
        )

        def run() -> None:
            step(reals)

    run()  # warm-up: lazy state (Adam moments) is created outside the count
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fastprogan.tools.dispatch", description=__doc__.split("\n")[0]
    )
    p.add_argument("--resolutions", default="4,16,64", help="comma list of active resolutions")
    p.add_argument("--max-resolution", type=int, default=256, help="the networks' final resolution")
    p.add_argument("--device", default="meta", help="meta (default: shapes only) or cpu")
    p.add_argument("--impl", default="triton", help="ops impl: triton (the GPU path), ref, auto")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 | fp16")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--fmap-base", type=int, default=None, help="default: 8192 on meta, 1024 on cpu")
    p.add_argument("--fmap-max", type=int, default=None, help="default: 512 on meta (paper), 8 on cpu")
    p.add_argument(
        "--fade", action="store_true", help="count mid-fade (halfway into each resolution) instead of stable"
    )
    p.add_argument("--api", choices=("runner", "steps"), default="runner")
    p.add_argument(
        "--old-adam", choices=("default", "foreach"), default="default", help="--api steps on an old checkout"
    )
    p.add_argument("--top", type=int, default=0, help="also list the N most dispatched ops")
    args = p.parse_args(argv)
    try:
        resolutions = [int(r) for r in args.resolutions.split(",") if r.strip()]
        if args.device == "cpu" and args.impl == "triton":
            import os

            if os.environ.get("TRITON_INTERPRET") != "1":
                raise ValueError("--impl triton on cpu needs TRITON_INTERPRET=1 (or use --device meta)")
        rows = []
        for res in resolutions:
            if res < 4 or res & (res - 1) or res > args.max_resolution:
                raise ValueError(f"resolution {res} must be a power of two in [4, {args.max_resolution}]")
            if args.fade and res == 4:
                raise ValueError("--fade needs resolutions above 4 (4x4 has no fade)")
            counter = count_ops(_iteration(args, res))
            rows.append((res, counter))
    except (ValueError, RuntimeError) as exc:
        print(f"dispatch: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"# ops per training iteration (D step + penalty, G_ema, G step); api={args.api} device={args.device} "
        f"impl={args.impl} precision={args.precision} batch={args.batch} {'mid-fade' if args.fade else 'stable'}"
    )
    print("resolution,ops")
    for res, counter in rows:
        print(f"{res},{counter.total}")
    skipped = ", ".join(f"{res}: {sum(counter.not_dispatched.values())}" for res, counter in rows)
    print(f"# not counted, never dispatched (autograd's saved-output copies under the mode): {skipped}")
    if args.top:
        for res, counter in rows:
            top = ", ".join(f"{name} {k}" for name, k in counter.counts.most_common(args.top))
            print(f"# {res}: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
