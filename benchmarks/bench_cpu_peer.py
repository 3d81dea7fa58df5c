"""fastprogan vs pytorch_GAN_zoo's PGAN on CPU: one training round per side, interleaved in one process.

The peer is facebookresearch/pytorch_GAN_zoo (https://github.com/facebookresearch/pytorch_GAN_zoo),
from YOUR clone (``--peer-checkout PATH``; fastprogan never ships or downloads it). At each resolution
both sides are built at the paper's widths and trained on the same random batch size:

- peer: ``models.progressive_gan.ProgressiveGAN`` with its standard PGAN configuration
  (``models/trainer/standard_configurations/pgan_config.py``: WGAN-GP, lambdaGP 10, epsilonD 0.001,
  minibatch stddev, pixel norm, equalized LR, latent 512, 3 channels) and ``depthScales`` (512 up to
  32x32, 256 at 64x64: ProGAN's channel table), grown with ``addScale`` to the resolution, blending
  alpha 0 (no fade). One round is ``optimizeParameters(reals)``: a D step (real, fake, WGAN-GP
  penalty, drift), a G step, the moving-average G update, exactly its own code. The one change: its
  Adam gets ``betas=(0.0, 0.99)`` instead of ``[0, 0.99]``, which torch >= 2.x rejects (mixed
  int/float); the numbers are the same.
- fastprogan: the ``v2-1gpu`` preset's networks (``fmap_base`` 8192, ``fmap_max`` 512) built for a
  run whose final resolution is the measured one, in its stable phase; one round is
  ``bench_train_step.train_round`` with ``minibatch_repeats=1``: one D step with the gradient penalty
  on fresh latents, the G_ema update, one G step on fresh latents (the trainer's own step functions).

Rounds alternate their order (peer, ours / ours, peer) so that load drifts hit both sides; the table
gives the median ms per round of each side and ``peer/ours`` (> 1: fastprogan is faster). Only this
ratio means anything on a shared machine; the 1-minute load average is printed with each row. The
peer has no mixed precision: it always runs fp32; fastprogan runs ``--precision`` (``auto``: bf16 on
a CPU with native bf16, else fp32)::

    git clone https://github.com/facebookresearch/pytorch_GAN_zoo /tmp/pytorch_GAN_zoo
    OMP_NUM_THREADS=2 python benchmarks/bench_cpu_peer.py --peer-checkout /tmp/pytorch_GAN_zoo \\
        --resolutions 16,32,64 --batches 16,8,8 --rounds 8 --threads 2 --precision fp32

Rows are appended to ``--csv`` (default ``runs/bench/cpu_peer.csv``, under the git-ignored ``runs/``;
header written once).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_train_step, beside this file
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench_train_step import make_setup, train_round

from fastprogan.bench.timing import summarize
from fastprogan.models import feature_maps
from fastprogan.training.config import TrainingConfig
from fastprogan.training.precision import resolve_precision

PEER_URL = "https://github.com/facebookresearch/pytorch_GAN_zoo"
PEER_MODULE = "models/progressive_gan.py"
PEER_CONFIG_MODULE = "models.trainer.standard_configurations.pgan_config"
# pgan_config.py's defaults, used when the clone's config module cannot be imported (checked below).
PEER_DEFAULTS = {
    "depthScales": [512, 512, 512, 512, 256, 128, 64, 32, 16],
    "dimLatentVector": 512,
    "lambdaGP": 10.0,
    "epsilonD": 0.001,
    "leakyness": 0.2,
    "baseLearningRate": 0.001,
}
OUR_PRESET = "v2-1gpu"  # the paper's widths: fmap_base 8192, fmap_max 512
CSV_COLUMNS = [
    "timestamp",
    "resolution",
    "batch",
    "threads",
    "precision",
    "impl",
    "rounds",
    "ours_ms",
    "ours_iqr_ms",
    "peer_ms",
    "peer_iqr_ms",
    "peer_over_ours",
    "load_1m",
    "peer_commit",
]


class PeerCheckoutError(SystemExit):
    """A missing or unusable ``--peer-checkout``: exits with a one-line message naming the missing thing."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


def check_peer_checkout(path: str | None) -> Path:
    """The clone's root, or PeerCheckoutError naming what is missing."""
    if not path:
        raise PeerCheckoutError(
            f"--peer-checkout PATH is required: a clone of {PEER_URL} (the peer is not bundled; "
            f"git clone {PEER_URL} PATH)"
        )
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise PeerCheckoutError(f"--peer-checkout {path}: no such directory (clone {PEER_URL} there)")
    if not (root / PEER_MODULE).is_file():
        raise PeerCheckoutError(
            f"--peer-checkout {path}: {PEER_MODULE} is missing; is it a clone of {PEER_URL}?"
        )
    return root


def peer_commit(root: Path) -> str:
    """The clone's HEAD commit, or "unknown" when it is not a git checkout of its own."""
    if not (root / ".git").exists():  # not a clone (a copy): never report an enclosing repo's commit
        return "unknown"
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_peer(root: Path) -> tuple[type, dict[str, Any]]:
    """The peer's ProgressiveGAN (Adam betas as floats, see the module docstring) and its PGAN settings."""
    for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
        del sys.modules[name]  # another checkout's (or project's) top-level "models" package
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("models.progressive_gan")
    except ImportError as exc:
        raise PeerCheckoutError(
            f"cannot import the peer's models.progressive_gan from {root}: {exc}"
        ) from None
    settings = dict(PEER_DEFAULTS)
    with contextlib.suppress(ImportError):  # a partial checkout: the defaults above are that file's values
        cfg = importlib.import_module(PEER_CONFIG_MODULE)._C
        settings.update({k: getattr(cfg, k) for k in PEER_DEFAULTS if hasattr(cfg, k)})

    class PeerPGAN(module.ProgressiveGAN):
        """The peer's model with Adam's betas as floats; everything else is its code."""

        def getOptimizerD(self):
            params = [p for p in self.netD.parameters() if p.requires_grad]
            return torch.optim.Adam(params, betas=(0.0, 0.99), lr=self.config.learningRate)

        def getOptimizerG(self):
            params = [p for p in self.netG.parameters() if p.requires_grad]
            return torch.optim.Adam(params, betas=(0.0, 0.99), lr=self.config.learningRate)

    return PeerPGAN, settings


def check_widths(depth_scales: list[int], config: TrainingConfig, resolution: int) -> list[int]:
    """The peer's depths from 4x4 up to ``resolution``; ValueError if they differ from ours (ProGAN's table)."""
    n = resolution.bit_length() - 2  # 4 -> 1 scale, 8 -> 2, ...
    if resolution < 4 or resolution & (resolution - 1) or n > len(depth_scales):
        raise ValueError(f"resolution must be a power of two from 4 to {4 * 2 ** (len(depth_scales) - 1)}")
    peer = list(depth_scales[:n])
    ours = [feature_maps(i + 1, config.fmap_base, config.fmap_decay, config.fmap_max) for i in range(n)]
    if peer != ours:
        raise ValueError(
            f"the peer's depthScales {peer} differ from fastprogan's widths {ours} up to {resolution}px"
        )
    return peer


def build_peer_round(
    peer_cls: type, settings: dict[str, Any], depths: list[int], batch: int
) -> Callable[[], None]:
    """One peer training round (``optimizeParameters``) on a fixed random batch of reals."""
    model = peer_cls(
        dimLatentVector=settings["dimLatentVector"],
        depthScale0=depths[0],
        initBiasToZero=True,
        leakyness=settings["leakyness"],
        perChannelNormalization=True,
        miniBatchStdDev=True,
        equalizedlR=True,
        dimOutput=3,
        useGPU=False,
        baseLearningRate=settings["baseLearningRate"],
        lossMode="WGANGP",
        lambdaGP=settings["lambdaGP"],
        epsilonD=settings["epsilonD"],
    )
    for depth in depths[1:]:
        model.addScale(depth)
    side = model.getSize()[0]
    reals = torch.rand(batch, 3, side, side) * 2 - 1  # [N, 3, R, R]
    return lambda: model.optimizeParameters(reals)


def build_our_round(resolution: int, batch: int, precision: str, impl: str) -> Callable[[], None]:
    """One fastprogan training round (D step + G_ema update + G step) at ``resolution``."""
    config = TrainingConfig.from_preset(OUR_PRESET).replace(
        resolution=resolution, minibatch_repeats=1, impl=impl
    )
    setup = make_setup(
        config, resolution, device=torch.device("cpu"), precision=precision, channels=3, batch=batch
    )
    return lambda: train_round(setup)


def time_interleaved(fns: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """ms per call of each function over ``rounds`` timed rounds, order alternating every round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for i in range(warmup + rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[name]()
            if i >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer-checkout", help=f"a clone of {PEER_URL}")
    p.add_argument("--resolutions", default="16,32,64")
    p.add_argument("--batches", default="16,8,8", help="one per resolution, or one for all")
    p.add_argument("--rounds", type=int, default=8, help="timed rounds per side")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument(
        "--precision", default="auto", help="fastprogan's side: auto | fp32 | bf16 (the peer: fp32)"
    )
    p.add_argument("--impl", default="auto", help="fastprogan's ops: auto | ref")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", default="runs/bench/cpu_peer.csv")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = check_peer_checkout(args.peer_checkout)
    resolutions = [int(r) for r in args.resolutions.split(",") if r.strip()]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if len(batches) == 1:
        batches *= len(resolutions)
    if len(batches) != len(resolutions) or min(batches) < 1:
        raise SystemExit("error: --batches needs one positive batch per resolution (or one for all)")
    if args.rounds < 1 or args.warmup < 0:
        raise SystemExit("error: --rounds must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    # The peer's G average uses add_(Number, Tensor), deprecated in torch but still exact: warn nothing.
    warnings.filterwarnings("ignore", message="This overload of add_ is deprecated")
    precision = resolve_precision(args.precision, torch.device("cpu")).name
    peer_cls, settings = load_peer(root)
    commit = peer_commit(root)
    config = TrainingConfig.from_preset(OUR_PRESET)
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    print(
        f"peer {root} ({commit[:12]}), fp32 | fastprogan {precision}, impl {args.impl} | {args.threads} threads"
    )
    print(f"{'res':>5} {'batch':>5} {'ours ms':>9} {'peer ms':>9} {'peer/ours':>9} {'load 1m':>7}")
    with open(out, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(CSV_COLUMNS)
        for res, batch in zip(resolutions, batches):
            depths = check_widths(settings["depthScales"], config, res)
            torch.manual_seed(args.seed)
            fns = {
                "peer": build_peer_round(peer_cls, settings, depths, batch),
                "ours": build_our_round(res, batch, precision, args.impl),
            }
            times = time_interleaved(fns, args.rounds, args.warmup)
            ours, peer = summarize(times["ours"]), summarize(times["peer"])
            ratio = peer.median_ms / ours.median_ms
            load = os.getloadavg()[0]
            print(
                f"{res:>5} {batch:>5} {ours.median_ms:9.1f} {peer.median_ms:9.1f} {ratio:9.2f} {load:7.2f}",
                flush=True,
            )
            writer.writerow(
                [
                    datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    *(res, batch, args.threads, precision, args.impl, args.rounds),
                    *(
                        f"{ours.median_ms:.2f}",
                        f"{ours.iqr_ms:.2f}",
                        f"{peer.median_ms:.2f}",
                        f"{peer.iqr_ms:.2f}",
                    ),
                    *(f"{ratio:.4g}", f"{load:.2f}", commit),
                ]
            )
            f.flush()  # a long run cut short keeps its finished resolutions
    print(f"appended to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
