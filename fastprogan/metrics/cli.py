"""``fastprogan metrics``: evaluate a checkpoint's G_ema with SWD, MS-SSIM and FID.

Registered by fastprogan/cli.py through :func:`add_parser`; heavy imports happen inside the handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported inside the handlers so that `fastprogan --help` stays light
    import torch

DEFAULT_METRICS = "swd,msssim,fid"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``metrics`` command to the top-level CLI."""
    p = subparsers.add_parser(
        "metrics",
        help="evaluate a checkpoint: SWD, MS-SSIM, FID",
        description=(
            "Evaluate a checkpoint's generator with the ProGAN paper's protocol: SWD (16,384 reals vs "
            "fakes, plus the real-vs-real floor), MS-SSIM over pairs of generated images, and FID when "
            "Inception weights are available. Prints a table and writes JSON."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="training checkpoint holding G_ema")
    p.add_argument(
        "--data",
        required=True,
        help="dataset directory (fastprogan.data) or a .npy/.npz uint8 array [N, C, H, W] or [N, H, W, C]",
    )
    p.add_argument("--metrics", default=DEFAULT_METRICS, help=f"comma-separated subset of {DEFAULT_METRICS}")
    p.add_argument("--num-images", type=int, default=16384, help="images per set for SWD and FID")
    p.add_argument("--num-pairs", type=int, default=10000, help="pairs of generated images for MS-SSIM")
    p.add_argument(
        "--out",
        default=None,
        help="JSON output (default: <checkpoint file>-metrics.json, beside the checkpoint: inside the run dir)",
    )
    p.add_argument("--inception", default=None, help="Inception feature extractor: TorchScript file for FID")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-floor", action="store_true", help="skip the SWD real-vs-real floor")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``fastprogan metrics``: bad arguments, checkpoints or data print one line, exit 2."""
    from fastprogan.training.errors import CheckpointError

    try:
        return _run(args)
    except (ValueError, TypeError, OSError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import warnings

    import torch

    from fastprogan.metrics.evaluate import evaluate
    from fastprogan.metrics.fid import FIDSkippedWarning
    from fastprogan.training.checkpoint import load_generator

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    G, meta = load_generator(args.checkpoint, device)
    G.eval()
    generate_fn = make_generate_fn(G, meta, device)
    probe = generate_fn(1, torch.Generator().manual_seed(0))  # [1, C, R, R]: the evaluation resolution
    resolution = int(probe.shape[-1])
    images = load_reals(args.data, resolution)
    with warnings.catch_warnings():
        # The table's FID row says why FID was skipped; the warning would print the same line again.
        warnings.simplefilter("ignore", FIDSkippedWarning)
        results = evaluate(
            generate_fn,
            iterate_reals(images, args.batch_size, args.seed, resolution),
            metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
            num_images=args.num_images,
            num_pairs=args.num_pairs,
            batch_size=args.batch_size,
            seed=args.seed,
            device=device,
            inception=args.inception,
            swd_floor=not args.no_floor,
            progress=sys.stderr.isatty(),
        )
    results.update(checkpoint=str(args.checkpoint), data=str(args.data), resolution=resolution)
    results["generator"] = {k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool))}
    out = Path(args.out) if args.out else default_output(args.checkpoint, meta)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    print(f"wrote {out}")
    return 0


def default_output(checkpoint: str, meta: dict[str, Any]) -> Path:
    """Where ``metrics`` writes its JSON without ``--out``: ``<file stem>-metrics.json`` beside the
    checkpoint file that was read, so ``--checkpoint RUNDIR`` writes inside RUNDIR (named after its
    newest checkpoint), not next to the run directory."""
    read = Path(meta.get("path") or checkpoint)
    if read.is_dir():  # a loader that did not report the file it read
        return read / "metrics.json"
    return read.with_name(read.stem + "-metrics.json")


def make_generate_fn(
    G: torch.nn.Module, meta: dict[str, Any], device: torch.device | str
) -> Callable[[int, torch.Generator], torch.Tensor]:
    """generate_fn(n, generator) for evaluate(): latents N(0, I) drawn on CPU, G called as G(z, lod=...)."""
    import torch

    latent = meta.get("latent_size") or getattr(G, "latent_size", None) or 512
    kwargs = {"lod": meta["lod"]} if "lod" in meta else {}

    @torch.no_grad()
    def generate(n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, int(latent), generator=generator).to(device)  # [n, latent]
        return G(z, **kwargs).float()  # [n, C, R, R] in [-1, 1]

    return generate


def load_reals(path: str, resolution: int) -> np.ndarray:
    """uint8 images [N, C, H, W] from a .npy/.npz array (any of the two layouts) or a fastprogan dataset.

    .npy is memory-mapped; .npz is read into memory (numpy cannot map compressed members); its array
    is the member "images" if present, else the first one.
    """
    p = Path(path)
    if p.suffix in (".npy", ".npz"):
        if p.suffix == ".npy":
            arr = np.load(p, mmap_mode="r")
        else:
            with np.load(p) as z:
                arr = z["images"] if "images" in z.files else z[z.files[0]]
        return as_nchw(arr)
    from fastprogan.data import open_dataset

    return as_nchw(np.asarray(open_dataset(str(p)).images(resolution)))


def as_nchw(arr: np.ndarray) -> np.ndarray:
    """View a uint8 [N, H, W], [N, H, W, C] or [N, C, H, W] array as [N, C, H, W] (no copy)."""
    if arr.dtype != np.uint8:
        raise TypeError(f"real images must be uint8, got {arr.dtype}")
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W] or [N, H, W, C], got shape {arr.shape}")
    if arr.shape[1] not in (1, 3) and arr.shape[-1] in (1, 3):
        return arr.transpose(0, 3, 1, 2)
    return arr


def iterate_reals(images: np.ndarray, batch_size: int, seed: int, resolution: int) -> Iterator[torch.Tensor]:
    """Shuffled uint8 torch batches [B, C, R, R]; larger images are 2x2-box-averaged down to R.

    The shuffle is a seeded permutation, so the two SWD draws of reals are disjoint. Halving follows
    the ProGAN dataset tool: repeated 2x2 averages in float, rounded once at the end.
    """
    import torch
    import torch.nn.functional as F

    size = images.shape[-1]
    if size < resolution or size % resolution or (size // resolution) & (size // resolution - 1):
        raise ValueError(f"real images are {size}px; cannot reduce them to the generator's {resolution}px")
    order = np.random.default_rng(seed + 1).permutation(images.shape[0])
    for start in range(0, len(order), batch_size):
        idx = np.sort(order[start : start + batch_size])  # sorted: sequential reads from a memory map
        batch = torch.from_numpy(np.ascontiguousarray(images[idx]))  # [B, C, H, W] uint8
        if size != resolution:
            x = batch.float()
            while x.shape[-1] > resolution:
                x = F.avg_pool2d(x, 2)
            batch = x.round().clamp(0, 255).to(torch.uint8)
        yield batch


def format_table(results: dict[str, Any]) -> str:
    """Human-readable table of an evaluate() result."""
    rows: list[tuple[str, str]] = []
    for key, label in (("swd", "SWD x1e3"), ("swd_real_floor", "SWD x1e3 real-vs-real")):
        for level, value in results.get(key, {}).items():
            rows.append((f"{label} {level}", f"{value:.3f}"))
    if "msssim" in results:
        rows.append((f"MS-SSIM ({results['msssim_pairs']} pairs)", f"{results['msssim']:.4f}"))
    if "fid" in results:
        fid = results["fid"]
        rows.append(("FID", f"{fid:.3f}" if fid is not None else results.get("fid_skipped", "skipped")))
    width = max((len(r[0]) for r in rows), default=6)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    lines += [f"note: {note}" for note in results.get("notes", [])]
    return "\n".join(lines)
