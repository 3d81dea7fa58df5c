"""Does bf16 training keep the quickstart's quality? SWD of fp32 and bf16 quickstart runs, several seeds.

Trains the README quickstart (``python -m fastprogan train``: the ``quickstart`` preset on the embedded
16x16 digits, one CPU thread) once per precision and seed, then evaluates each run's final checkpoint
the same way (``python -m fastprogan metrics --metrics swd``: G_ema in fp32, the same reals, the same
SWD seed, ``--num-images`` fakes against as many reals, plus the real-vs-real floor from the next
``--num-images`` reals). bf16 passes when every same-seed difference (bf16 SWD minus fp32 SWD) is at
most the fp32 runs' seed-to-seed standard deviation; whether each bf16 run also lies inside the fp32
range ``[min, max]`` is printed too. ``--precision bf16`` is passed explicitly: ``auto`` picks bf16 on CPU only where it is
native (AVX-512 BF16 / AMX), and this comparison is about the numerics, not the speed. Examples::

    python benchmarks/cpu_bf16_quality.py                          # 3 seeds x fp32,bf16, ~2 min per run
    python benchmarks/cpu_bf16_quality.py --seeds 0 --train-arg=--total-kimg=12   # a shorter schedule
    python benchmarks/cpu_bf16_quality.py --reuse     # evaluate finished runs in --out again, train the rest

Each run goes to ``--out/<precision>-s<seed>`` (replaced when it exists); one row per run is written to
``--csv`` (default ``runs/bench/cpu_bf16_quality.csv``, under the git-ignored ``runs/``; rewritten each
time): precision, seed, swd_mean, swd_floor, train_s, kimg, checkpoint. A summary follows the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
CSV_COLUMNS = ["precision", "seed", "swd_mean", "swd_floor", "train_s", "kimg", "checkpoint"]


class RunResult(NamedTuple):
    """One trained and evaluated run."""

    precision: str
    seed: int
    swd_mean: float  # SWD x1e3, mean over the pyramid levels (one level, 16, at 16x16)
    swd_floor: float | None  # real-vs-real SWD x1e3 of the same evaluation (None without enough reals)
    train_s: float
    kimg: float
    checkpoint: str


class Summary(NamedTuple):
    """Seed-to-seed statistics of one precision."""

    precision: str
    n: int
    mean: float
    stdev: float  # sample standard deviation (0 for one run)
    low: float
    high: float


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that trained to its end (its log's last line says ``done:``)."""
    log = run_dir / "log.txt"
    return log.is_file() and any(line.startswith("done:") for line in log.read_text().splitlines()[-3:])


def train_and_evaluate(
    precision: str,
    seed: int,
    run_dir: Path,
    *,
    train_args: list[str],
    num_images: int,
    metrics_seed: int,
    reuse: bool = False,
) -> RunResult:
    """Train one quickstart run (unless ``reuse`` and it is finished) and compute its final SWD."""
    train_s = float("nan")  # a reused run was not timed here
    if not (reuse and finished(run_dir)):
        cmd = [sys.executable, "-m", "fastprogan", "train", "--out", str(run_dir), "--precision", precision]
        cmd += ["--seed", str(seed), "--overwrite", "--no-progress", *train_args]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
        train_s = time.perf_counter() - t0
    config = json.loads((run_dir / "config.json").read_text())
    if int(config["seed"]) != seed:
        raise RuntimeError(f"{run_dir}: trained with seed {config['seed']}, expected {seed}")
    picked = config.get("resolved_precision", config.get("precision"))
    if picked != precision:
        raise RuntimeError(f"{run_dir}: asked for {precision}, the run trained in {picked}")
    data = Path(config["data"])
    data = data if data.is_absolute() else run_dir / data
    out = run_dir / "swd.json"
    cmd = [sys.executable, "-m", "fastprogan", "metrics", "--checkpoint", str(run_dir), "--data", str(data)]
    cmd += [
        "--metrics",
        "swd",
        "--num-images",
        str(num_images),
        "--seed",
        str(metrics_seed),
        "--out",
        str(out),
    ]
    cmd += ["--device", "cpu"]
    subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    floor = result.get("swd_real_floor", {}).get("mean")
    return RunResult(
        precision,
        seed,
        float(result["swd"]["mean"]),
        None if floor is None else float(floor),
        train_s,
        float(result["generator"]["kimg"]),
        str(result["generator"]["path"]),
    )


def summarize(results: list[RunResult]) -> dict[str, Summary]:
    """Per precision: mean, sample stdev, min and max of the final SWD over seeds."""
    out: dict[str, Summary] = {}
    for precision in dict.fromkeys(r.precision for r in results):
        values = [r.swd_mean for r in results if r.precision == precision]
        stdev = statistics.stdev(values) if len(values) > 1 else 0.0
        out[precision] = Summary(
            precision, len(values), statistics.fmean(values), stdev, min(values), max(values)
        )
    return out


def within_range(values: list[float], reference: Summary) -> bool:
    """Whether every value lies within the reference precision's seed-to-seed range [min, max]."""
    return all(reference.low <= v <= reference.high for v in values)


def paired_differences(results: list[RunResult], precision: str, reference: str) -> dict[int, float]:
    """SWD of ``precision`` minus SWD of ``reference`` trained with the same seed, per seed both have."""
    ref = {r.seed: r.swd_mean for r in results if r.precision == reference}
    return {r.seed: r.swd_mean - ref[r.seed] for r in results if r.precision == precision and r.seed in ref}


def within_spread(differences: dict[int, float], reference: Summary) -> bool:
    """The verdict: every same-seed difference is at most the reference's seed-to-seed stdev.

    A per-run range check alone misjudges: a precision that changes nothing still lands outside
    ``[min, max]`` about half the time on the seeds that make the extremes, since each run follows
    its seed. The difference a precision makes is the same-seed difference; the seed-to-seed stdev
    is the scale it is judged against.
    """
    return (
        bool(differences) and reference.n > 1 and all(abs(d) <= reference.stdev for d in differences.values())
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated; the first is the reference")
    p.add_argument("--out", default="runs/bench/cpu_bf16_quality", help="parent of the run directories")
    p.add_argument("--csv", default="runs/bench/cpu_bf16_quality.csv")
    p.add_argument(
        "--num-images",
        type=int,
        default=896,
        help="fakes and reals for SWD (the embedded set has 1,797 images: 896 leaves as many for the floor)",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="evaluate runs already finished in --out instead of training them again (train_s blank)",
    )
    p.add_argument("--metrics-seed", type=int, default=0, help="SWD seed, the same for every run")
    p.add_argument(
        "--train-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every `fastprogan train` (repeat; e.g. --train-arg=--total-kimg=12)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    if not seeds or not precisions:
        raise SystemExit("error: --seeds and --precisions must name at least one value each")
    results: list[RunResult] = []
    for seed in seeds:  # seed-major: a run cut short still has both precisions of its first seeds
        for precision in precisions:
            run_dir = Path(args.out) / f"{precision}-s{seed}"
            r = train_and_evaluate(
                precision,
                seed,
                run_dir,
                train_args=args.train_arg,
                num_images=args.num_images,
                metrics_seed=args.metrics_seed,
                reuse=args.reuse,
            )
            results.append(r)
            floor = "-" if r.swd_floor is None else f"{r.swd_floor:.3f}"
            trained = "reused" if math.isnan(r.train_s) else f"{r.train_s:.1f} s"
            print(
                f"{precision:<5} seed {seed:<4} SWD x1e3 {r.swd_mean:8.3f}  floor {floor:>7}  "
                f"train {trained:>8}  kimg {r.kimg:.1f}",
                flush=True,
            )
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in results:
            floor = "" if r.swd_floor is None else f"{r.swd_floor:.4f}"
            train_s = "" if math.isnan(r.train_s) else f"{r.train_s:.1f}"
            writer.writerow([r.precision, r.seed, f"{r.swd_mean:.4f}", floor, train_s, r.kimg, r.checkpoint])
    summary = summarize(results)
    ref = summary[precisions[0]]
    for s in summary.values():
        print(
            f"{s.precision:<5} n={s.n}  mean {s.mean:.3f}  stdev {s.stdev:.3f}  range [{s.low:.3f}, {s.high:.3f}]"
            f"  (spread {s.high - s.low:.3f})"
        )
    for precision in precisions[1:]:
        values = [r.swd_mean for r in results if r.precision == precision]
        diffs = paired_differences(results, precision, ref.precision)
        shown = ", ".join(f"seed {k}: {d:+.3f}" for k, d in diffs.items())
        print(f"{precision} - {ref.precision}, same seed: {shown}")
        verdict = "within" if within_spread(diffs, ref) else "NOT within"
        print(
            f"{precision}: every same-seed difference {verdict} the {ref.precision} seed-to-seed stdev {ref.stdev:.3f}"
        )
        in_range = "all" if within_range(values, ref) else "not all"
        print(
            f"{precision}: {in_range} runs inside the {ref.precision} range [{ref.low:.3f}, {ref.high:.3f}]"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
