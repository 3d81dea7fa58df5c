"""The official release's networks as fastprogan checkpoints, and ``fastprogan import-official``.

``fastprogan import-official karras2018iclr-celebahq-1024x1024.pkl runs/celebahq-official`` reads the
pickle with :func:`fastprogan.models.official.read_official` (no TensorFlow, no code from the file) and
writes ``runs/celebahq-official/checkpoint-000000000.pt`` (or the ``.pt`` path given), which
``generate``, ``metrics``, ``video`` and ``train --resume`` accept. ``generate --checkpoint X.pkl``
reads the pickle directly.

The checkpoint's config is ``--preset`` (default ``v2-1gpu``: the official CelebA-HQ minibatch and
learning rates) with the network's own widths, resolution and minibatch-stddev group, and a schedule
that starts stable at the resolution the network was saved at (``lod_initial_resolution``), so a
resumed run fine-tunes instead of growing again from 4x4. Resuming starts fresh Adam states, counters
and RNG streams (``config.seed``); ``--total-kimg`` sets the fine-tuning length (changeable again at
``train --resume ... --total-kimg N``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

DEFAULT_PRESET = "v2-1gpu"
DEFAULT_FINETUNE_KIMG = 1000.0


def official_meta(nets: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` of an imported network (the keys :func:`checkpoint.load_generator` returns)."""
    lod = float(nets.lod)
    res_log2 = int(math.log2(nets.resolution))
    return {
        "lod": lod,
        "resolution": 1 << (res_log2 - math.floor(lod)),
        "max_resolution": nets.resolution,
        "num_channels": nets.num_channels,
        "latent_size": nets.latent_size,
        "kimg": 0.0,
        "pixelnorm_eps": nets.pixelnorm_eps,
        "precision": "fp32",
        "source": "official",
        "source_file": Path(path).name,
    }


def official_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Any, dict]:
    """Gs of an official pickle as a fastprogan Generator (eval, frozen, on ``device``) and its meta."""
    from fastprogan.models.official import read_official

    nets = read_official(path)
    meta = {**official_meta(nets, path), "config": None, "path": str(path)}
    return nets.G_ema.to(device).eval(), meta


def import_official(
    pkl: str | os.PathLike,
    out: str | os.PathLike,
    *,
    preset: str = DEFAULT_PRESET,
    total_kimg: float = DEFAULT_FINETUNE_KIMG,
) -> Path:
    """Convert an official pickle to a fastprogan checkpoint at ``out`` (a ``.pt`` file, or a run
    directory that gets ``checkpoint-000000000.pt``); returns the file written (atomically).

    Raises OfficialFormatError (unsafe / unusable pickle) or ConfigError (bad preset or total_kimg).
    """
    from fastprogan.models.official import OfficialFormatError, read_official
    from fastprogan.training.checkpoint import checkpoint_name, write_checkpoint_file
    from fastprogan.training.config import TrainingConfig

    nets = read_official(pkl)
    if not (nets.G_ema.normalize_latents and nets.G.blocks["4x4"].conv.pixel_norm):
        raise OfficialFormatError(
            f"{pkl}: networks without latent normalisation or pixel norm cannot be written as a fastprogan "
            "checkpoint (its config always uses both); generate from the .pkl directly instead"
        )
    meta = official_meta(nets, pkl)
    config = TrainingConfig.from_preset(
        preset,
        resolution=nets.resolution,
        lod_initial_resolution=meta["resolution"],
        total_kimg=total_kimg,
        latent_size=nets.latent_size,
        mbstd_group_size=nets.mbstd_group_size,
        **nets.fmap,
    )
    state = {
        "config": config.to_dict(),
        "G": nets.G.state_dict(),
        "D": nets.D.state_dict(),
        "G_ema": nets.G_ema.state_dict(),
        "meta": meta,
        "origin": {"kind": "official", "file": Path(pkl).name},
    }
    target = Path(out)
    if target.suffix != ".pt":
        target = target / checkpoint_name(0)
    return write_checkpoint_file(state, target)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fastprogan import-official`` to the top-level CLI."""
    p = subparsers.add_parser(
        "import-official",
        help="convert an official ProGAN release pickle (G, D, Gs) to a fastprogan checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pkl", help="the release file, e.g. karras2018iclr-celebahq-1024x1024.pkl")
    p.add_argument("out", help="a run directory (gets checkpoint-000000000.pt) or a .pt file")
    p.add_argument(
        "--preset", default=DEFAULT_PRESET, help=f"training preset for fine-tuning ({DEFAULT_PRESET})"
    )
    p.add_argument(
        "--total-kimg",
        type=float,
        default=DEFAULT_FINETUNE_KIMG,
        help=f"fine-tuning length for a later train --resume (default {DEFAULT_FINETUNE_KIMG:g})",
    )
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    """Handler of ``fastprogan import-official``: one line and exit 2 on any bad input."""
    from fastprogan.models.official import OfficialFormatError
    from fastprogan.training.errors import ConfigError

    try:
        path = import_official(args.pkl, args.out, preset=args.preset, total_kimg=args.total_kimg)
    except (OfficialFormatError, ConfigError, OSError) as exc:
        print(f"fastprogan import-official: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {path} (G, D, G_ema from {Path(args.pkl).name}); try: fastprogan generate --checkpoint {path}"
    )
    return 0
