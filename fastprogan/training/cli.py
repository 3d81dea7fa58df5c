"""``fastprogan train``: the ProGAN recipe on a dataset (default: the quickstart preset on the embedded
digits, on CPU in a few minutes).

Settings come from ``--preset`` (``v2-1gpu`` ... ``v2-8gpu``, ``v1``, ``quickstart``), then the explicit
flags, then ``--set field=value`` (any TrainingConfig field; values parse as JSON when they can:
``--set minibatch_dict='{"4": 64}'``). With ``--resume`` the run's own config is used and only
settings that do not change the arithmetic may be given. A new run refuses an ``--out`` that holds
another run unless ``--overwrite``; ``--resume auto`` resumes when OUT has a checkpoint and starts
otherwise (for ``torchrun --max-restarts``). Exit status: 0 done, 1 stopped on a non-finite
loss/weight, 2 a fault (bad setting, dataset, checkpoint or output directory: one line naming it and
the fix), 130 interrupted by Ctrl-C, 143 stopped by SIGTERM after writing a checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

# argparse dest -> TrainingConfig field, for the explicit flags.
_FLAG_FIELDS = {
    "data": "data",
    "resolution": "resolution",
    "total_kimg": "total_kimg",
    "lod_training_kimg": "lod_training_kimg",
    "lod_transition_kimg": "lod_transition_kimg",
    "fmap_base": "fmap_base",
    "fmap_max": "fmap_max",
    "minibatch_base": "minibatch_base",
    "lr": "lr_base",
    "seed": "seed",
    "precision": "precision",
    "allow_tf32": "allow_tf32",
    "impl": "impl",
    "batch": "batch",
    "cuda_graphs": "cuda_graphs",
    "loss": "loss",
    "mirror": "mirror",
    "snapshot_kimg": "snapshot_kimg",
    "snapshot_ticks": "snapshot_ticks",
    "keep": "keep",
    "grid_images": "grid_images",
    "metrics": "metrics",
    "metrics_every_ticks": "metrics_every_ticks",
    "metrics_images": "metrics_images",
    "num_workers": "num_workers",
    "cpu_threads": "cpu_threads",
    "verify_data": "verify_data",
    "skip_bad": "skip_bad",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train ProGAN (default: the quickstart preset on the embedded dataset)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default=None, help="run directory (default: runs/<preset>)")
    p.add_argument("--data", help="dataset directory (default: the embedded digits, built in OUT/dataset)")
    p.add_argument("--preset", default="quickstart", help="v2-1gpu|v2-2gpu|v2-4gpu|v2-8gpu|v1|quickstart")
    p.add_argument(
        "--resume",
        metavar="latest|auto|PATH",
        help="continue from the newest checkpoint in OUT (latest), the same or start when there is none "
        "(auto), or PATH",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the run already in OUT (deletes its files)"
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda:LOCAL_RANK if available, else cpu)")
    g = p.add_argument_group("schedule and networks")
    g.add_argument("--resolution", type=int, help="final resolution (default: the preset's / the dataset's)")
    g.add_argument("--total-kimg", type=float)
    g.add_argument("--lod-training-kimg", type=float, help="kimg per resolution, stabilising")
    g.add_argument("--lod-transition-kimg", type=float, help="kimg per resolution, fading in")
    g.add_argument("--fmap-base", type=int)
    g.add_argument("--fmap-max", type=int)
    g.add_argument("--minibatch-base", type=int, help="minibatch for resolutions the preset does not list")
    g.add_argument(
        "--lr", type=float, help="base learning rate (the preset's per-resolution rates still apply)"
    )
    g.add_argument("--loss", help="wgan-gp (default) or lsgan")
    g.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None, help="random x-flips")
    g.add_argument("--seed", type=int)
    h = p.add_argument_group("precision and hardware")
    h.add_argument(
        "--precision",
        help="auto (bf16 on CUDA with bf16 and on CPUs with AVX-512 BF16/AMX, else fp32) | fp32 | bf16 | fp16",
    )
    h.add_argument("--allow-tf32", action=argparse.BooleanOptionalAction, default=None)
    h.add_argument("--impl", help="ops: auto (Triton kernels on CUDA) | ref (plain torch) | triton (force)")
    h.add_argument("--batch", help="preset (default) or auto: the largest per-GPU batch that fits (CUDA)")
    h.add_argument(
        "--cuda-graphs",
        help="replay each phase's D and G steps as CUDA graphs: auto (default: CUDA fp32/bf16; off for fp16) "
        "| on | off",
    )
    h.add_argument(
        "--num-workers",
        metavar="N|auto",
        help="data loader threads (default auto: up to 2, leaving a core for training and one for the "
        "data verifier)",
    )
    h.add_argument("--cpu-threads", type=int, help="torch threads when training on CPU (0: torch default)")
    h.add_argument(
        "--verify-data",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="check each image against its checksum in the manifest when first read (default: on)",
    )
    h.add_argument(
        "--skip-bad",
        action="store_true",
        default=None,
        help="skip corrupt images (logged, counted) instead of stopping",
    )
    s = p.add_argument_group("snapshots, feedback, metrics")
    s.add_argument("--snapshot-kimg", type=float, help="also checkpoint every N kimg")
    s.add_argument("--snapshot-ticks", type=int, help="checkpoint every N ticks (official: 10; 0: off)")
    s.add_argument("--keep", type=int, help="keep the newest K checkpoints")
    s.add_argument("--grid-images", type=int, help="images in the fixed-latent grid")
    s.add_argument("--metrics", help="comma list of swd,msssim,fid computed during training (default: none)")
    s.add_argument("--metrics-every-ticks", type=int)
    s.add_argument("--metrics-images", type=int)
    s.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any config field")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run_train)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from fastprogan.training.config import parse_set_option

    values = {
        field: getattr(args, dest) for dest, field in _FLAG_FIELDS.items() if getattr(args, dest) is not None
    }
    for item in args.set:
        key, value = parse_set_option(item)
        values[key] = value
    return values


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``fastprogan train``."""
    from pathlib import Path

    from fastprogan.data.errors import DatasetError
    from fastprogan.training.config import TrainingConfig
    from fastprogan.training.errors import (
        CheckpointError,
        ConfigError,
        Interrupted,
        NonFiniteError,
        OutputError,
    )

    try:
        overrides = _overrides(args)
        out = Path(args.out or f"runs/{args.preset}")
        note = None
        if args.resume is None or (args.resume == "auto" and not _has_checkpoint(out)):
            if "data" in overrides and "resolution" not in overrides:
                # Your own data: train up to its resolution, not the preset's (quickstart's 16 would win).
                note = TrainingConfig.from_preset(args.preset).resolution
                overrides["resolution"] = None
            config = TrainingConfig.from_preset(args.preset, **overrides)
            overrides = {}
        else:
            config = None
        if args.print_config and config is not None:
            print(config.to_json())
            return 0
        from fastprogan.training.loop import Trainer

        trainer = Trainer(
            out,
            config,
            resume=args.resume,
            overrides=overrides,
            device=args.device,
            progress=not args.no_progress and sys.stderr.isatty(),
            overwrite=args.overwrite,
        )
        if args.print_config:
            print(trainer.config.to_json())
            return 0
        if note is not None:
            print(
                f"note: --data without --resolution: training up to the dataset's {trainer.config.resolution}px "
                f"(preset {args.preset} says {note}px; pass --resolution to choose)"
            )
        trainer.run()
        return 0
    except (ConfigError, CheckpointError, DatasetError, OutputError) as exc:
        print(f"fastprogan train: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # an I/O failure no check caught (e.g. a dataset read error): still one line
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"fastprogan train: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"fastprogan train: {exc}", file=sys.stderr)
        return exc.exit_code
    except NonFiniteError as exc:
        print(f"fastprogan train: stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        from fastprogan.training.distributed import env_from_torchrun, shutdown

        shutdown(env_from_torchrun())


def _has_checkpoint(out) -> bool:
    from fastprogan.training.checkpoint import list_checkpoints

    return bool(list_checkpoints(out))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n"))
