"""``fastprogan bench`` (also ``python -m fastprogan.bench``): measure every GPU claim within a budget.

    fastprogan bench --out benchmarks/results/<device>            # on a GPU: smoke, train, ops, dispatch
    fastprogan bench --device cpu --quick --out /tmp/dry          # CPU dry run: the same code, tiny shapes
    fastprogan bench --report-only --out D                        # report.md/PNGs again from D/results.csv

Exit status: 0, 1 if the correctness smoke failed, 2 for bad arguments (one line, no traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

MEASURE_NAMES = ("smoke", "train", "ops", "dispatch")


class BenchArgError(Exception):
    """A bad command-line value; reported as one line with exit code 2."""


def _csv_list(text: str | None, what: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...] | None:
    if text is None:
        return None
    items = tuple(v.strip() for v in text.split(",") if v.strip())
    if not items:
        raise BenchArgError(f"--{what}: empty list")
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise BenchArgError(f"--{what}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", required=True, type=Path, help="output folder (results.csv, report.md, PNGs, env.json)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--quick", action="store_true", help="tiny shapes (the CPU dry run; proves the code path)")
    p.add_argument("--budget-s", type=float, default=420.0, help="seconds for the whole run (default 420)")
    p.add_argument(
        "--measures", help=f"comma list of {', '.join(MEASURE_NAMES)} (default: all, in that order)"
    )
    p.add_argument(
        "--smoke-only", action="store_true", help="only the correctness smoke (= --measures smoke)"
    )
    p.add_argument("--dtypes", help="comma list of fp32, bf16, fp16 (default: each measure's own)")
    p.add_argument("--resolutions", help="comma list of resolutions, e.g. 4,64,1024 (default: 4..1024)")
    p.add_argument("--providers", help="comma list of provider names to run (default: every registered one)")
    p.add_argument(
        "--compile-backend", help="torch.compile backend (default: inductor on CUDA, eager on CPU)"
    )
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile providers")
    p.add_argument(
        "--report-only", action="store_true", help="rewrite report.md and the PNGs from results.csv"
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure speed on this device (smoke, training iteration, ops, dispatch table)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run_cli)


def _device(text: str):
    import torch

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise BenchArgError(f"--device: {exc}") from None
    if device.type not in ("cpu", "cuda"):
        raise BenchArgError(f"--device: cpu or cuda[:N], got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchArgError(
            "--device cuda: no CUDA device is visible to torch here (use --device cpu --quick)"
        )
    return device


def options_from_args(args: argparse.Namespace):
    """Validate the arguments into runner Options (BenchArgError naming the bad one)."""
    from fastprogan.bench.runner import Options

    if args.budget_s <= 0:
        raise BenchArgError(f"--budget-s must be > 0, got {args.budget_s}")
    if args.out.exists() and not args.out.is_dir():
        raise BenchArgError(f"--out {args.out}: exists and is not a folder")
    measures = ("smoke",) if args.smoke_only else _csv_list(args.measures, "measures", MEASURE_NAMES)
    resolutions = _csv_list(args.resolutions, "resolutions")
    try:
        res = None if resolutions is None else tuple(int(r) for r in resolutions)
    except ValueError:
        raise BenchArgError(f"--resolutions: integers, got {args.resolutions!r}") from None
    if res is not None and any(r < 4 or r & (r - 1) for r in res):
        raise BenchArgError(f"--resolutions: powers of two from 4, got {args.resolutions!r}")
    providers = _csv_list(args.providers, "providers")
    if providers is not None:
        known = known_providers()
        bad = [p for p in providers if p not in known]
        if bad:
            raise BenchArgError(f"--providers: unknown {', '.join(bad)}; registered: {', '.join(known)}")
    return Options(
        out=args.out,
        device=_device(args.device),
        quick=args.quick,
        budget_s=args.budget_s,
        measures=measures or MEASURE_NAMES,
        dtypes=_csv_list(args.dtypes, "dtypes", ("fp32", "bf16", "fp16")),
        resolutions=res,
        providers=providers,
        compile_backend=args.compile_backend,
        compile=not args.no_compile,
    )


def known_providers() -> list[str]:
    from fastprogan.bench.dispatch import DISPATCH_CHOICES  # noqa: F401  (dispatch candidates are not providers)
    from fastprogan.bench.ops import OP_PROVIDERS
    from fastprogan.bench.train import TRAIN_PROVIDERS

    return list(dict.fromkeys(TRAIN_PROVIDERS.names() + OP_PROVIDERS.names()))


def run_cli(args: argparse.Namespace) -> int:
    if args.report_only:
        if not (args.out / "results.csv").is_file():
            print(f"bench: {args.out / 'results.csv'} does not exist (run the bench first)", file=sys.stderr)
            return 2
        from fastprogan.bench.report import write_report

        for path in write_report(args.out):
            print(f"wrote {path}")
        return 0
    wanted = args.device if args.device != "auto" else None
    if (wanted is not None and wanted.startswith("cpu")) or (wanted is None and not _cuda_available()):
        # The smoke runs the Triton kernels under the interpreter on CPU: the flag must be set before
        # the kernel modules are imported (they are loaded on first use, after this point).
        os.environ.setdefault("TRITON_INTERPRET", "1")
    try:
        options = options_from_args(args)
    except BenchArgError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    from fastprogan.bench.runner import run

    try:
        return run(options)
    except OSError as exc:  # the output folder cannot be written (permissions, disk full)
        print(f"bench: {exc}", file=sys.stderr)
        return 2


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    """``python -m fastprogan.bench``: the same arguments as ``fastprogan bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m fastprogan.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    try:
        return run_cli(parser.parse_args(argv))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
