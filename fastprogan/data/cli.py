"""``fastprogan dataset create|info|verify``: registered by fastprogan/cli.py through add_parser.

Only argparse is imported here; the dataset code is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys


def _create(args: argparse.Namespace) -> int:
    from fastprogan.data.create import create_dataset
    from fastprogan.data.errors import DatasetError

    try:
        create_dataset(
            args.source,
            args.out,
            args.resolution,
            channels=args.channels,
            max_images=args.max_images,
            transform=args.transform,
            workers=args.workers,
            skip_bad=args.skip_bad,
            seed=args.seed,
            overwrite=args.overwrite,
            # A bar only on a terminal: redirected to a file or a CI log, tqdm's carriage-return
            # redraws would write one line per refresh.
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _info(args: argparse.Namespace) -> int:
    from fastprogan.data.errors import DatasetError
    from fastprogan.data.shards import ShardedDataset, level_file_problems

    try:
        # The manifest summary is useful even when a level file is damaged: report those below.
        ds = ShardedDataset(args.path, check_files=False)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = ds.manifest
    opts = m.get("options", {})
    total = sum(
        (ds.path / f["path"]).stat().st_size for f in m["files"].values() if (ds.path / f["path"]).exists()
    )
    print(f"dataset:     {ds.path}")
    print(f"images:      {ds.num_images}")
    print(f"channels:    {ds.channels}")
    print(f"resolutions: {', '.join(str(r) for r in ds.resolutions)}")
    print(f"source:      {m.get('source', {}).get('path', '?')} ({m.get('source', {}).get('kind', '?')})")
    print(f"options:     {', '.join(f'{k}={v}' for k, v in opts.items())}")
    print(
        f"skipped:     {len(m.get('skipped', []))} bad files; ignored: {len(m.get('ignored', []))} non-images"
    )
    print(f"size:        {total / 2**20:.1f} MiB")
    print(f"tool:        fastprogan {m.get('tool_version', '?')}")
    print(
        f"checksums:   {'per-image xxh3_64 at every level' if ds.has_checksums else 'none (run dataset verify --rehash)'}"
    )
    problems = level_file_problems(ds.path, m)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 2 if problems else 0


def _verify(args: argparse.Namespace) -> int:
    from fastprogan.data.shards import verify_dataset

    problems = verify_dataset(args.path, deep=args.deep, rehash=args.rehash)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        print(f"verify failed: {len(problems)} problem(s) in {args.path}", file=sys.stderr)
        return 2
    print(
        f"ok: {args.path}" + (" (per-image xxh3_64 checksums written to the manifest)" if args.rehash else "")
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dataset`` with its sub-commands create, info and verify."""
    p = subparsers.add_parser("dataset", help="build, inspect and verify datasets")
    sub = p.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda _args: (p.print_help(), 2)[1])

    c = sub.add_parser("create", help="build a sharded dataset (one uint8 .npy per resolution)")
    c.add_argument("source", help="a folder tree or .zip of PNG/JPEG/WebP, or a uint8 .npy/.npz array")
    c.add_argument("out", help="dataset directory to create")
    c.add_argument("--resolution", type=int, required=True, help="top resolution R (power of two >= 4)")
    c.add_argument("--channels", type=int, choices=(1, 3), default=3, help="1 = grayscale, 3 = RGB")
    c.add_argument("--max-images", type=int, default=None, help="keep at most N images")
    c.add_argument("--transform", choices=("none", "center-crop"), default="none")
    c.add_argument("--workers", type=int, default=0, help="decoding processes (0 = in this process)")
    c.add_argument("--skip-bad", action="store_true", help="skip and list bad files instead of failing")
    c.add_argument("--seed", type=int, default=0, help="seed of the fixed shuffled order")
    c.add_argument("--overwrite", action="store_true", help="replace OUT once the new dataset is complete")
    c.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (none anyway when stderr is not a terminal)",
    )
    c.set_defaults(func=_create)

    i = sub.add_parser("info", help="print a dataset's manifest summary")
    i.add_argument("path")
    i.set_defaults(func=_info)

    v = sub.add_parser("verify", help="check shapes, checksums and manifest; exit 2 on any mismatch")
    v.add_argument("path")
    v.add_argument("--deep", action="store_true", help="also recompute every level from the top one")
    v.add_argument(
        "--rehash",
        action="store_true",
        help="once everything else checks out, (re)write every level's per-image xxh3_64 checksums "
        "into the manifest (upgrades datasets made before the loader checked them)",
    )
    v.set_defaults(func=_verify)
