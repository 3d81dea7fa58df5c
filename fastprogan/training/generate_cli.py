"""``fastprogan generate``: PNGs from a checkpoint's G_ema (or an official release .pkl), one per seed,
and optionally a grid; or, with ``--interpolate A,B[,C...]``, frames along the path through those
seeds' pixel-normalised latents (``--frames`` per segment, ``--slerp``) and one strip image.

A seed is the same latent on every device (drawn on the CPU, then moved), so ``--seeds 0-63 --grid``
reproduces the training run's ``grid-<kimg>.png`` of that checkpoint pixel for pixel on the same device.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="images from a checkpoint's G_ema", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="a checkpoint-*.pt file (or a run directory: newest)")
    p.add_argument("--seeds", default="0-63", help="N, A-B or a comma list (default 0-63)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--grid", action="store_true", help="also write grid.png of all seeds")
    p.add_argument(
        "--device", default="auto", help="auto (default: cuda when available, else cpu), cpu, cuda:1 ..."
    )
    p.add_argument("--lod", type=float, help="level of detail (default: the checkpoint's)")
    p.add_argument(
        "--batch", type=int, help="images per forward pass (default: 32, as the trainer renders grids)"
    )
    p.add_argument(
        "--precision",
        default="fp32",
        help="fp32 (default: bit-exact with the trainer's grids) | bf16 | fp16 | auto",
    )
    p.add_argument(
        "--grid-pad", type=int, help="px between grid and strip cells (default: 2, as training grids)"
    )
    p.add_argument(
        "--interpolate",
        metavar="A,B[,C...]",
        help="instead of --seeds: frames along the path through these seeds' latents, and strip.png",
    )
    p.add_argument(
        "--frames", type=int, default=8, help="frames per interpolation segment, endpoints included"
    )
    p.add_argument("--slerp", action="store_true", help="spherical instead of linear interpolation")
    p.set_defaults(func=run_generate)


def resolve_device(name: str):
    """``auto`` -> cuda when available, else cpu; ValueError for CUDA without CUDA."""
    import torch

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available")
    return device


def run_generate(args: argparse.Namespace) -> int:
    """Handler of ``fastprogan generate``."""
    from pathlib import Path

    from fastprogan.training.checkpoint import load_generator, resolve_resume
    from fastprogan.training.errors import CheckpointError, ConfigError, OutputError, output_error
    from fastprogan.training.images import GRID_PAD, RENDER_BATCH, make_grid, parse_seeds, render, save_png
    from fastprogan.training.precision import resolve_precision

    # Defaults live with the renderer (imported here: the CLI stays light until a command runs).
    args.batch = RENDER_BATCH if args.batch is None else args.batch
    args.grid_pad = GRID_PAD if args.grid_pad is None else args.grid_pad

    try:
        seeds = parse_seeds(args.seeds)
        keys = parse_seeds(args.interpolate) if args.interpolate is not None else None
        if keys is not None and len(keys) < 2:
            raise ValueError(f"--interpolate {args.interpolate}: give at least two seeds, e.g. 3,7")
        if args.frames < 2:
            raise ValueError(f"--frames {args.frames}: must be >= 2 (the endpoints)")
        if args.batch < 1:
            raise ValueError(f"--batch {args.batch}: must be >= 1")
        if args.grid_pad < 0:
            raise ValueError(f"--grid-pad {args.grid_pad}: must be >= 0")
        device = resolve_device(args.device)
        policy = resolve_precision(args.precision, device)
        path = resolve_resume(args.checkpoint, Path(args.checkpoint).parent, what="--checkpoint")
        G, meta = load_generator(path, device, what="--checkpoint")
        lod = meta["lod"] if args.lod is None else args.lod
        max_lod = G.res_log2 - 2
        if not 0 <= lod <= max_lod:
            raise ValueError(
                f"--lod {lod}: must be in [0, {max_lod}] for this {meta['max_resolution']}px generator"
            )
    except (ValueError, CheckpointError, ConfigError) as exc:
        print(f"fastprogan generate: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(out, exc, doing="create --out") from None
        autocast = policy.autocast()
        if keys is not None:
            return _interpolate(G, keys, lod, device, args, autocast, out)
        images = render(G, seeds, lod, device, batch=args.batch, autocast=autocast)  # uint8 [N, C, R, R]
        for seed, image in zip(seeds, images, strict=True):
            save_png(image, out / f"seed-{seed:04d}.png")  # atomic: no partial PNG on a full disk
        if args.grid:
            save_png(make_grid(images, pad=args.grid_pad), out / "grid.png")
    except OutputError as exc:
        print(f"fastprogan generate: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(seeds)} image(s) at {images.shape[-1]}px (lod {lod:g}) to {out}")
    return 0


def _interpolate(G, keys: list[int], lod: float, device, args: argparse.Namespace, autocast, out) -> int:
    """``--interpolate``: frame-NNNN.png along the path through the seeds' latents, and strip.png."""
    import torch

    from fastprogan.training.images import latents_for_seeds, make_grid, render_latents, save_png
    from fastprogan.training.latents import interpolation_path

    z = interpolation_path(
        latents_for_seeds(keys, G.latent_size), args.frames, slerp=args.slerp
    )  # [F, latent]
    images = torch.cat(list(render_latents(G, z, lod, device, args.batch, autocast)))  # uint8 [F, C, R, R]
    for i, image in enumerate(images):
        save_png(image, out / f"frame-{i:04d}.png")
    save_png(make_grid(images, columns=len(images), pad=args.grid_pad), out / "strip.png")
    how = "slerp" if args.slerp else "linear"
    print(f"wrote {len(images)} frame(s) ({how}, seeds {','.join(map(str, keys))}) and strip.png to {out}")
    return 0
