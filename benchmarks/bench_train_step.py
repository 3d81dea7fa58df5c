"""Seconds per training step (one D step with the gradient penalty + one G step) per resolution.

Uses the trainer's own step functions, networks and precision policy. Examples::

    # CPU, the quickstart preset's narrow networks:
    python benchmarks/bench_train_step.py --preset quickstart --resolutions 4,8,16 --csv bench_cpu.csv
    # GPU, the paper's widths (fmap_base 8192, fmap_max 512) and the v2 1-GPU batches:
    python benchmarks/bench_train_step.py --preset v2-1gpu --precision bf16 --device cuda --csv bench_gpu.csv

Rows are appended to the CSV (header written once): device, preset, precision, resolution, batch,
fmap_base, fmap_max, threads, steps, sec_per_step, images_per_s.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastprogan.training.config import TrainingConfig
from fastprogan.training.networks import build_discriminator, build_generator
from fastprogan.training.precision import resolve_precision
from fastprogan.training.schedule import schedule_at
from fastprogan.training.steps import StepContext, discriminator_step, generator_step

CSV_COLUMNS = [
    "device",
    "preset",
    "precision",
    "resolution",
    "batch",
    "fmap_base",
    "fmap_max",
    "threads",
    "steps",
    "sec_per_step",
    "images_per_s",
]


def stable_nimg(config: TrainingConfig, resolution: int) -> int:
    """An nimg where the schedule trains ``resolution`` with its block fully faded in."""
    phase_dur = config.lod_training_kimg + config.lod_transition_kimg
    phase_idx = int(math.log2(resolution)) - int(math.log2(config.lod_initial_resolution))
    return round(phase_idx * phase_dur * 1000)


def bench_resolution(config, resolution, *, device, precision, channels, batch, steps, warmup) -> dict:
    policy = resolve_precision(precision, device)
    G = build_generator(config, channels, policy.pixelnorm_eps).to(device)
    D = build_discriminator(config, channels).to(device)
    opt = lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    ctx = StepContext(G, D, opt(G), opt(D), policy.make_scaler(), policy.make_scaler(), policy, config)
    phase = schedule_at(config, stable_nimg(config, resolution))
    assert phase.resolution == resolution and phase.alpha == 1.0
    n = batch or phase.minibatch
    reals = torch.rand(n, channels, resolution, resolution, device=device) * 2 - 1
    z = torch.randn(n, G.latent_size, device=device)
    u = torch.rand(n, 1, 1, 1, device=device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        discriminator_step(ctx, reals, z, u, phase.lod)
        generator_step(ctx, z, phase.lod)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"resolution": resolution, "batch": n, "sec_per_step": sec, "images_per_s": n / sec}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quickstart")
    p.add_argument("--fmap-base", type=int)
    p.add_argument("--fmap-max", type=int)
    p.add_argument("--resolutions", default="4,8,16")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels", type=int, default=None, help="default: 1 for quickstart, else 3")
    p.add_argument("--batch", type=int, help="per step (default: the preset's minibatch at each resolution)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    p.add_argument("--csv", default="benchmarks/results/train_step.csv")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("fmap_base", args.fmap_base), ("fmap_max", args.fmap_max)) if v}
    resolutions = [int(r) for r in args.resolutions.split(",")]
    config = TrainingConfig.from_preset(args.preset, **overrides)
    if config.resolution is None or config.resolution < max(resolutions):
        config = config.replace(resolution=max(resolutions))
    device = torch.device(args.device)
    channels = args.channels or (1 if args.preset == "quickstart" else 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    with open(out, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(CSV_COLUMNS)
        for res in resolutions:
            r = bench_resolution(
                config,
                res,
                device=device,
                precision=args.precision,
                channels=channels,
                batch=args.batch,
                steps=args.steps,
                warmup=args.warmup,
            )
            row = [name, args.preset, resolve_precision(args.precision, device).name, res, r["batch"]]
            row += [config.fmap_base, config.fmap_max, torch.get_num_threads(), args.steps]
            row += [f"{r['sec_per_step']:.5f}", f"{r['images_per_s']:.1f}"]
            writer.writerow(row)
            print(
                f"{res:>5}px batch {r['batch']:>4}: {r['sec_per_step'] * 1000:8.1f} ms/step  {r['images_per_s']:8.1f} img/s"
            )
    print(f"appended to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
