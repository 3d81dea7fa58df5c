"""Benchmark: SWD of N reals vs N fakes at 128x128 (the paper uses N = 16,384).

    python benchmarks/bench_swd.py [--num-images N] [--resolution R] [--device D]
    pytest benchmarks/bench_swd.py --benchmark-enable      # small N, pytest-benchmark timing

Images are synthetic (smooth random colour fields plus noise): a pool of 1,024 per set is made up
front and streamed in batches, cycling, so only the metric is timed and, as in an evaluation run,
the accumulator keeps only descriptors. Reports the time of the streaming
phase (pyramids and descriptor extraction), of compute() (normalisation, projections, sorts), and
the peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fastprogan.metrics.swd import SlicedWassersteinDistance


def synthetic_batch(n: int, resolution: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 [n, 3, R, R]: bilinear-upsampled 8x8 colour fields plus pixel noise (image-like statistics)."""
    coarse = torch.rand(n, 3, 8, 8, generator=generator) * 255  # [n, 3, 8, 8]
    x = F.interpolate(coarse, size=resolution, mode="bilinear", align_corners=False)
    x = x + torch.randn(n, 3, resolution, resolution, generator=generator) * 12
    return x.round().clamp(0, 255).to(torch.uint8)


POOL = 1024  # distinct synthetic images per set, cycled; their synthesis is not timed


def run_swd(num_images: int, resolution: int = 128, batch_size: int = 256, device: str = "cpu") -> dict:
    """Stream num_images reals and fakes through the SWD accumulator; return timings and the result.

    Each set cycles through a pool of distinct images made up front, so only the metric is timed;
    every pass over the pool draws new neighbourhoods, so the descriptors are all distinct.
    """
    pool = min(POOL, num_images)
    reals = synthetic_batch(pool, resolution, torch.Generator().manual_seed(1))  # [pool, 3, R, R]
    fakes = synthetic_batch(pool, resolution, torch.Generator().manual_seed(2))
    swd = SlicedWassersteinDistance(seed=0, device=device)
    t0 = time.perf_counter()
    for start in range(0, num_images, batch_size):
        n = min(batch_size, num_images - start)
        index = torch.arange(start, start + n) % pool
        swd.add_reals(reals[index])
        swd.add_fakes(fakes[index])
    t1 = time.perf_counter()
    result = swd.compute()
    t2 = time.perf_counter()
    return {"add_s": t1 - t0, "compute_s": t2 - t1, "total_s": t2 - t0, "swd": result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=16384)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    print(
        f"SWD {args.num_images} vs {args.num_images} images at {args.resolution}px on {args.device}, "
        f"{torch.get_num_threads()} threads"
    )
    load_before = os.getloadavg()[0]
    r = run_swd(args.num_images, args.resolution, args.batch_size, args.device)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"streaming (pyramids + descriptors): {r['add_s']:.1f} s")
    print(f"compute (normalise + project + sort): {r['compute_s']:.1f} s")
    print(f"total: {r['total_s']:.1f} s, peak RSS {peak_gib:.1f} GiB")
    print(
        f"1-min load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} (other processes skew timings)"
    )
    print("SWD x1e3: " + ", ".join(f"{k} {v:.3f}" for k, v in r["swd"].items()))
    return 0


def test_bench_swd(benchmark) -> None:
    """pytest-benchmark entry: 256 images at 128px (the full protocol is the script's default)."""
    result = benchmark.pedantic(run_swd, args=(256,), rounds=1, iterations=1)
    assert result["swd"]["mean"] > 0


if __name__ == "__main__":
    raise SystemExit(main())
