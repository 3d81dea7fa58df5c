"""Seconds per training iteration, measured on the trainer's real round, per resolution and ``--impl``.

One round is what ``Trainer._train_round`` does: ``minibatch_repeats`` x (``d_repeats`` x (a D step
with the gradient penalty on fresh latents and mixing factors, then the G_ema update), then a G step
on fresh latents). It uses the trainer's own step functions, EMA update, networks, optimiser settings
and precision policy; reals are one fixed random batch (the loader has its own benchmark,
``bench_loader.py``). ``sec_per_step`` is the round's time / ``minibatch_repeats``: one D step + EMA
+ one G step. Several ``--impl`` values are timed interleaved, round by round in alternating order, in
one process (speeds on a shared machine drift minute to minute: only such ratios are comparable), and
each row carries its time relative to the first impl. Examples::

    # CPU, quickstart widths, batch 8 (the CPU default), a few seconds:
    python benchmarks/bench_train_step.py
    # CPU, paper widths, fastprogan (auto) vs the plain reference (impl=ref), fp32, interleaved:
    python benchmarks/bench_train_step.py --preset v2-1gpu --resolutions 16,32,64 --impl auto,ref \\
        --precision fp32 --threads 2
    # GPU, paper widths, the v2 1-GPU batches:
    python benchmarks/bench_train_step.py --preset v2-1gpu --precision bf16 --device cuda --batch 0

Rows are appended to ``--csv`` (default ``runs/bench/train_step.csv``, under the git-ignored
``runs/``; header written once): device, preset, impl, precision (resolved), resolution, batch,
fmap_base, fmap_max, threads, rounds, sec_per_step, images_per_s, vs_first_impl.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastprogan.training.config import TrainingConfig
from fastprogan.training.ema import make_ema, update_ema
from fastprogan.training.networks import build_discriminator, build_generator
from fastprogan.training.precision import resolve_precision
from fastprogan.training.schedule import schedule_at
from fastprogan.training.steps import StepContext, discriminator_step, generator_step

CSV_COLUMNS = [
    "device",
    "preset",
    "impl",
    "precision",
    "resolution",
    "batch",
    "fmap_base",
    "fmap_max",
    "threads",
    "rounds",
    "sec_per_step",
    "images_per_s",
    "vs_first_impl",
]
CPU_DEFAULT_BATCH = 8  # a CPU run of the defaults finishes in seconds; GPUs use the preset's batch


def stable_nimg(config: TrainingConfig, resolution: int) -> int:
    """An nimg where the schedule trains ``resolution`` with its block fully faded in."""
    phase_dur = config.lod_training_kimg + config.lod_transition_kimg
    phase_idx = int(math.log2(resolution)) - int(math.log2(config.lod_initial_resolution))
    return round(phase_idx * phase_dur * 1000)


class Setup(NamedTuple):
    """One impl's networks, optimisers and fixed inputs at one resolution."""

    ctx: StepContext
    G_ema: torch.nn.Module
    reals: torch.Tensor  # [N, C, R, R]
    lod: float


def make_setup(config: TrainingConfig, resolution: int, *, device, precision, channels, batch) -> Setup:
    policy = resolve_precision(precision, device)
    torch.manual_seed(config.seed)
    G = build_generator(config, channels, policy.pixelnorm_eps).to(device)
    D = build_discriminator(config, channels).to(device)

    phase = schedule_at(config, stable_nimg(config, resolution))
    assert phase.resolution == resolution and phase.alpha == 1.0

    def adam(m: torch.nn.Module) -> torch.optim.Adam:  # the trainer's settings at this phase
        betas = (config.adam_beta1, config.adam_beta2)
        return torch.optim.Adam(m.parameters(), lr=phase.lr, betas=betas, eps=config.adam_eps)

    ctx = StepContext(G, D, adam(G), adam(D), policy.make_scaler(), policy.make_scaler(), policy, config)
    n = batch or phase.minibatch
    reals = torch.rand(n, channels, resolution, resolution, device=device) * 2 - 1
    return Setup(ctx, make_ema(G), reals, phase.lod)


def train_round(setup: Setup) -> None:
    """The trainer's round (``Trainer._train_round``) on a fixed batch of reals, fresh latents per step."""
    ctx, cfg = setup.ctx, setup.ctx.config
    n, device, latent = setup.reals.shape[0], setup.reals.device, ctx.G.latent_size
    for _ in range(cfg.minibatch_repeats):
        for _ in range(cfg.d_repeats):
            z = torch.randn(n, latent).to(device)  # [N, latent], drawn on the host like the trainer
            u = torch.rand(n, 1, 1, 1).to(device)  # [N, 1, 1, 1]
            discriminator_step(ctx, setup.reals, z, u, setup.lod)
            update_ema(setup.G_ema, ctx.G, cfg.ema_beta)
        generator_step(ctx, torch.randn(n, latent).to(device), setup.lod)  # fresh latents for G


def time_impls(setups: dict[str, Setup], rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per round of each setup, interleaved (alternating order every round)."""
    times: dict[str, list[float]] = {k: [] for k in setups}
    names = list(setups)
    for i in range(warmup + rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            device = setups[name].reals.device
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            train_round(setups[name])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def default_batch(device: torch.device) -> int:
    """The batch when ``--batch`` is not given: small on CPU, the preset's (0) on a GPU."""
    return CPU_DEFAULT_BATCH if device.type == "cpu" else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quickstart")
    p.add_argument("--fmap-base", type=int)
    p.add_argument("--fmap-max", type=int)
    p.add_argument("--resolutions", default="4,8,16")
    p.add_argument("--impl", default="auto", help="comma-separated, timed interleaved: auto,ref,triton")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels", type=int, default=None, help="default: 1 for quickstart, else 3")
    p.add_argument(
        "--batch",
        type=int,
        help=f"per step; 0: the preset's minibatch at each resolution (default: {CPU_DEFAULT_BATCH} on CPU, 0 on GPU)",
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="timed rounds per impl (each minibatch_repeats steps)"
    )
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    p.add_argument("--csv", default="runs/bench/train_step.csv")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = args.batch if args.batch is not None else default_batch(device)
    overrides = {k: v for k, v in (("fmap_base", args.fmap_base), ("fmap_max", args.fmap_max)) if v}
    resolutions = [int(r) for r in args.resolutions.split(",")]
    impls = [s.strip() for s in args.impl.split(",") if s.strip()]
    config = TrainingConfig.from_preset(args.preset, **overrides)
    if config.resolution is None or config.resolution < max(resolutions):
        config = config.replace(resolution=max(resolutions))
    configs = {impl: config.replace(impl=impl) for impl in impls}  # validates each impl name
    channels = args.channels or (1 if args.preset == "quickstart" else 3)
    precision = resolve_precision(args.precision, device).name
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    with open(out, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(CSV_COLUMNS)
        for res in resolutions:
            setups = {
                impl: make_setup(
                    c, res, device=device, precision=args.precision, channels=channels, batch=batch
                )
                for impl, c in configs.items()
            }
            sec = time_impls(setups, args.rounds, args.warmup)
            for impl, s in setups.items():
                n, steps = s.reals.shape[0], config.minibatch_repeats
                per_step = sec[impl] / steps
                ratio = sec[impl] / sec[impls[0]]
                row = [name, args.preset, impl, precision, res, n, config.fmap_base, config.fmap_max]
                row += [torch.get_num_threads(), args.rounds, f"{per_step:.5f}", f"{n / per_step:.1f}"]
                row += [f"{ratio:.3f}"]
                writer.writerow(row)
                print(
                    f"{res:>5}px batch {n:>4} impl {impl:<6} {precision}: {per_step * 1000:9.1f} ms/step "
                    f"{n / per_step:8.1f} img/s  x{ratio:.2f} of {impls[0]}",
                    flush=True,
                )
    print(f"appended to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
