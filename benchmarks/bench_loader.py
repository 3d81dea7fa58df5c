"""ImageLoader throughput from a warm page cache: uint8 bytes per second at 128, 256 and 1024, and
the cost of checksum verification (``verify=True``, the default) as on/off ratios.

    python -m pytest benchmarks/bench_loader.py --benchmark-enable     # pytest-benchmark
    python benchmarks/bench_loader.py [REPEATS]                        # prints a table

A synthetic dataset (random uint8 images: incompressible, like real data to a memcpy) is built once
per resolution in a temp dir through the normal create path; it is read once to warm the page cache,
then batches are drawn. Target: >= 1 GB/s.

Verification cost. The loader hashes an image (xxh3_64) the first time the process reads it, in the
same visit as its copy (``copy_and_hash``: the bytes are read from memory once), and remembers the
verdict on the opened dataset. Two numbers matter, each the ratio verify on / off of median
throughputs from interleaved on/off rounds in one process (speeds here drift up to 3x minute to
minute; only ratios of interleaved runs mean anything). Budget for both: >= 0.85 (at most 15% slower).
  * first read: whole epochs in which no image has been checked yet (every image is hashed as it is
    read: the first epoch at each level of a run, once per process);
  * steady: every image checked already (every later epoch, phase and loader): a per-batch lookup.
Each is reported three ways: wall clock; per CPU second of this process (verification is CPU work,
so this is steadier on a shared machine); and "min": the fastest of 300 interleaved timings of
gathering one batch (least sensitive to other jobs).
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


def measure(
    path: Path,
    resolution: int,
    num_workers: int,
    seconds: float = 1.0,
    verify: bool = True,
    dataset=None,
    cpu: bool = False,
) -> float:
    """uint8 bytes per second delivered by ImageLoader (at least ``seconds`` of batches).

    ``cpu``: per second of this process's CPU time (all threads) instead of wall time. Verification
    costs CPU work, so on a shared machine, where other jobs deschedule this one, CPU-time ratios
    show the cost far more steadily than wall-time ratios.
    """
    _, batch = CASES[resolution]
    ds = dataset if dataset is not None else open_dataset(path)
    loader = ImageLoader(ds, resolution, batch, num_workers=num_workers, verify=verify)
    next(loader)  # start threads, first permutation
    done, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += next(loader).numel()
    cpu_elapsed = time.process_time() - cpu_start
    loader.close()
    return done / (cpu_elapsed if cpu else elapsed)


def measure_first_reads(
    path: Path, resolution: int, num_workers: int, verify: bool, seconds: float = 0.3
) -> tuple[float, float]:
    """(bytes per wall second, per CPU second) over whole epochs in which no image was checked yet:
    before each epoch the dataset's record of checked images is cleared (outside the timing), so with
    verify every image is hashed as it is read; without, the same epochs unchecked."""
    _, batch = CASES[resolution]
    ds = open_dataset(path)
    loader = ImageLoader(ds, resolution, batch, num_workers=num_workers, verify=verify)
    level = ds.verified(resolution)
    done, elapsed, cpu_elapsed = 0, 0.0, 0.0
    while elapsed < seconds:
        loader.close()  # no batch gathered ahead of the reset
        level.state[:] = level.UNCHECKED
        start, cpu_start = time.perf_counter(), time.process_time()
        done += sum(next(loader).numel() for _ in range(loader.steps_per_epoch))
        elapsed += time.perf_counter() - start
        cpu_elapsed += time.process_time() - cpu_start
    loader.close()
    return done / elapsed, done / max(cpu_elapsed, 1e-9)


def verify_ratios(
    path: Path, resolution: int, num_workers: int, rounds: int = 7, seconds: float = 0.3
) -> dict[str, float]:
    """Interleaved verify on/off rounds in this process: median GB/s of each and their ratios
    (``steady_*``: all images checked; ``first_*``: none checked)."""
    checked = open_dataset(path)  # one opened dataset: its images are checked in the warm-up below
    warm = ImageLoader(checked, resolution, CASES[resolution][1])
    for _ in range(warm.steps_per_epoch):
        next(warm)
    kinds = ("steady", "steady_cpu", "first", "first_cpu")
    runs: dict[str, dict[bool, list[float]]] = {k: {True: [], False: []} for k in kinds}
    for i in range(rounds):
        for verify in (False, True) if i % 2 == 0 else (True, False):  # alternate which goes first
            runs["steady"][verify].append(measure(path, resolution, num_workers, seconds, verify, checked))
            runs["steady_cpu"][verify].append(
                measure(path, resolution, num_workers, seconds, verify, checked, cpu=True)
            )
            wall, cpu = measure_first_reads(path, resolution, num_workers, verify, seconds)
            runs["first"][verify].append(wall)
            runs["first_cpu"][verify].append(cpu)
    med = {k: {v: float(np.median(x)) / 1e9 for v, x in d.items()} for k, d in runs.items()}
    out = {"off_gbps": med["steady"][False], "on_gbps": med["steady"][True]}
    out.update({"first_off_gbps": med["first"][False], "first_on_gbps": med["first"][True]})
    for key in kinds:
        out[f"{key}_ratio"] = med[key][True] / med[key][False]
    return out


def batch_time_ratios(path: Path, resolution: int, reps: int = 300) -> dict[str, float]:
    """on/off throughput ratios of gathering one batch, from the fastest of ``reps`` interleaved
    timings of each: verify off, verify on with the batch's images checked (steady) and verify on with
    them unchecked (first read: every image hashed as it is copied). The minimum filters out the
    descheduling that dominates wall times on a shared machine."""
    _, batch = CASES[resolution]
    ds = open_dataset(path)
    loaders = {
        "off": ImageLoader(ds, resolution, batch, verify=False),
        "steady": ImageLoader(ds, resolution, batch, verify=True),
        "first": ImageLoader(ds, resolution, batch, verify=True),
    }
    idx = loaders["off"]._next_indices(0, 0)[0]  # the first batch of epoch 0: a typical scattered batch
    level = ds.verified(resolution)
    loaders["steady"]._gather(idx)  # its images are now checked
    times: dict[str, list[float]] = {k: [] for k in loaders}
    kinds = tuple(loaders)
    for i in range(reps):
        for kind in kinds[i % 3 :] + kinds[: i % 3]:  # rotate the order
            level.state[idx] = level.UNCHECKED if kind == "first" else level.SOUND
            start = time.perf_counter()
            loaders[kind]._gather(idx)
            times[kind].append(time.perf_counter() - start)
    t = {k: min(v) for k, v in times.items()}
    return {
        "gather_us": t["off"] * 1e6,
        "steady_us": t["steady"] * 1e6,
        "first_us": t["first"] * 1e6,
        "steady_min_ratio": t["off"] / t["steady"],
        "first_min_ratio": t["off"] / t["first"],
    }


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


def test_verify_cost_ratio(benchmark, tmp_path_factory, resolution, num_workers):
    """Interleaved on/off ratios (see the module docstring); recorded in extra_info."""
    path = build(tmp_path_factory.mktemp(f"v{resolution}"), resolution)
    ratios = benchmark.pedantic(lambda: verify_ratios(path, resolution, num_workers, rounds=3), rounds=1)
    benchmark.extra_info.update({k: round(v, 3) for k, v in ratios.items()})


def main(repeats: int = 1) -> None:
    """Print the throughput and verify on/off table; ``repeats`` runs it several times (speeds drift)."""
    print(
        f"{'res':>5} {'images':>6} {'batch':>5} {'workers':>7} {'GB/s off':>8} | first read on/off: "
        f"{'wall':>6} {'cpu':>6} {'min':>6} | steady on/off: {'wall':>6} {'cpu':>6} {'min':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for resolution, (n, batch) in CASES.items():
                path = build(Path(tmp), resolution)
                for workers in (0, 2):
                    r = verify_ratios(path, resolution, workers)
                    m = batch_time_ratios(path, resolution)  # single-threaded gather: same for both rows
                    print(
                        f"{resolution:>5} {n:>6} {batch:>5} {workers:>7} {r['off_gbps']:>8.2f} | "
                        f"{'':>18} {r['first_ratio']:>6.3f} {r['first_cpu_ratio']:>6.3f} "
                        f"{m['first_min_ratio']:>6.3f} | {'':>14} {r['steady_ratio']:>6.3f} "
                        f"{r['steady_cpu_ratio']:>6.3f} {m['steady_min_ratio']:>6.3f}",
                        flush=True,
                    )
            if repeat + 1 < repeats:
                print("-" * 20, flush=True)
    print("on/off: throughput with verification / without (1.0 = free); budget >= 0.85 for both.")
    print("first read: no image checked yet, every image hashed as it is copied (the first epoch per")
    print("  level and process); steady: all checked (every later epoch, phase and loader).")
    print("wall: wall clock; cpu: per CPU second of this process (steadier on a shared machine);")
    print("  min: fastest of 300 interleaved one-batch gathers (least sensitive to other jobs).")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
