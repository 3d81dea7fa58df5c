"""Command line: ``fastprogan train|generate|dataset|metrics|bench ...``.

Each command lives beside the code it drives and registers itself through ``add_parser(subparsers)``;
this file only lists them, so importing the CLI stays light (heavy imports happen inside handlers).
"""

from __future__ import annotations

import argparse
import importlib
import sys

import fastprogan

# Each module defines add_parser(subparsers) -> None and sets a `func` default on its parser.
COMMAND_MODULES: list[str] = [
    "fastprogan.training.cli",
    "fastprogan.training.generate_cli",
    "fastprogan.training.official",
    "fastprogan.training.video",
    "fastprogan.data.cli",
    "fastprogan.metrics.cli",
    "fastprogan.bench.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastprogan",
        description="Fast Progressive Growing of GANs: training, generation, datasets, metrics, benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"fastprogan {fastprogan.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A command whose module is not part of this build is left out; a missing third-party
            # dependency inside an existing module is a real error and is raised.
            if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
