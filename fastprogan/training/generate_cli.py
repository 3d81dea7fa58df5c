"""``fastprogan generate``: PNGs from a checkpoint's G_ema, one per seed, and optionally a grid.

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
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 ...")
    p.add_argument("--lod", type=float, help="level of detail (default: the checkpoint's)")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    """Handler of ``fastprogan generate``."""
    from pathlib import Path

    import torch

    from fastprogan.training.checkpoint import load_generator, resolve_resume
    from fastprogan.training.errors import CheckpointError, OutputError, output_error
    from fastprogan.training.images import make_grid, parse_seeds, render, save_png

    try:
        seeds = parse_seeds(args.seeds)
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available")
        path = resolve_resume(args.checkpoint, Path(args.checkpoint).parent, what="--checkpoint")
        G, meta = load_generator(path, device, what="--checkpoint")
        lod = meta["lod"] if args.lod is None else args.lod
        max_lod = G.res_log2 - 2
        if not 0 <= lod <= max_lod:
            raise ValueError(
                f"--lod {lod}: must be in [0, {max_lod}] for this {meta['max_resolution']}px generator"
            )
    except (ValueError, CheckpointError) as exc:
        print(f"fastprogan generate: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(out, exc, doing="create --out") from None
        images = render(G, seeds, lod, device)  # uint8 [N, C, R, R]
        for seed, image in zip(seeds, images, strict=True):
            save_png(image, out / f"seed-{seed:04d}.png")  # atomic: no partial PNG on a full disk
        if args.grid:
            save_png(make_grid(images), out / "grid.png")
    except OutputError as exc:
        print(f"fastprogan generate: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(seeds)} image(s) at {images.shape[-1]}px (lod {lod:g}) to {out}")
    return 0
