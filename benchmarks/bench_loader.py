"""ImageLoader throughput from a warm page cache: uint8 bytes per second at 128, 256 and 1024.

    python -m pytest benchmarks/bench_loader.py --benchmark-enable     # pytest-benchmark
    python benchmarks/bench_loader.py                                  # prints a table

A synthetic dataset (random uint8 images: incompressible, like real data to a memcpy) is built once
per resolution in a temp dir through the normal create path; it is read once to warm the page cache,
then batches are drawn. Target: >= 1 GB/s.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fastprogan.data import ImageLoader, create_dataset, open_dataset

# resolution -> (images in the dataset, batch size): a few hundred at 128/256, fewer at 1024.
CASES = {128: (400, 64), 256: (300, 32), 1024: (48, 8)}


def build(root: Path, resolution: int) -> Path:
    """A synthetic RGB dataset with CASES[resolution][0] images, built once under ``root``."""
    out = root / f"bench_{resolution}"
    if not (out / "manifest.json").exists():
        n = CASES[resolution][0]
        arr = np.random.default_rng(resolution).integers(0, 256, (n, resolution, resolution, 3), np.uint8)
        np.save(root / f"src_{resolution}.npy", arr)
        create_dataset(root / f"src_{resolution}.npy", out, resolution, progress=False, log=lambda _m: None)
        (root / f"src_{resolution}.npy").unlink()
    ds = open_dataset(out)
    ds.images(resolution).sum(dtype=np.uint64)  # touch every page: a warm page cache
    return out


def measure(path: Path, resolution: int, num_workers: int, seconds: float = 1.0) -> float:
    """uint8 bytes per second delivered by ImageLoader (at least ``seconds`` of batches)."""
    _, batch = CASES[resolution]
    loader = ImageLoader(open_dataset(path), resolution, batch, num_workers=num_workers)
    next(loader)  # start threads, first permutation
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += next(loader).numel()
    loader.close()
    return done / elapsed


def _bench(benchmark, tmp_path_factory, resolution: int, num_workers: int) -> None:
    path = build(tmp_path_factory.mktemp(f"r{resolution}"), resolution)
    _, batch = CASES[resolution]
    loader = ImageLoader(open_dataset(path), resolution, batch, num_workers=num_workers)
    nbytes = next(loader).numel()
    benchmark.extra_info["bytes_per_batch"] = nbytes
    benchmark.pedantic(lambda: next(loader), rounds=100, warmup_rounds=5)
    gbps = nbytes / benchmark.stats.stats.mean / 1e9
    benchmark.extra_info["GB/s"] = round(gbps, 2)
    loader.close()


def pytest_generate_tests(metafunc):
    if "resolution" in metafunc.fixturenames:
        metafunc.parametrize("resolution", sorted(CASES))
    if "num_workers" in metafunc.fixturenames:
        metafunc.parametrize("num_workers", [0, 2])


def test_loader_throughput(benchmark, tmp_path_factory, resolution, num_workers):
    _bench(benchmark, tmp_path_factory, resolution, num_workers)


def main() -> None:
    print(f"{'resolution':>10} {'images':>7} {'batch':>6} {'workers':>8} {'GB/s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for resolution, (n, batch) in CASES.items():
            path = build(Path(tmp), resolution)
            for workers in (0, 2):
                gbps = measure(path, resolution, workers) / 1e9
                print(f"{resolution:>10} {n:>7} {batch:>6} {workers:>8} {gbps:>7.2f}")


if __name__ == "__main__":
    main()
