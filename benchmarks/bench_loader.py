"""ImageLoader throughput from a warm page cache: uint8 bytes per second at 128, 256 and 1024, and
the cost of checksum verification (``verify=True``, the default) as on/off ratios.

    python -m pytest benchmarks/bench_loader.py --benchmark-enable     # pytest-benchmark
    python benchmarks/bench_loader.py [REPEATS]                        # prints a table

A synthetic dataset (random uint8 images: incompressible, like real data to a memcpy) is built once
per resolution in a temp dir through the normal create path; it is read once to warm the page cache,
then batches are drawn. Target: >= 1 GB/s.

Verification cost. Each image is checked against its xxh3_64 the first time the process reads it,
by the level's background verifier process a few batches ahead of the loader
(``fastprogan.data.verifier``) or, for any image it has not reached, by the loader in the same visit
as its copy; the verdict is remembered on the opened dataset. Two numbers matter, each the median
over rounds of the ratio verify on / off of a pair of runs back to back in one process (speeds here
drift up to 3x minute to minute; only ratios of interleaved runs mean anything). Budget for both:
>= 0.85 (at most 15% slower).
  * first read: every image unchecked when the loader meets it (the first epoch at each level of a
    run, once per process), emulated on the small bench dataset by marking each delivered batch
    unchecked again (``measure_first_reads``);
  * steady: every image checked already (every later epoch, phase and loader): once the loader has
    seen the level all checked (at an epoch's end) it reads it exactly as with verify off.
Rows: ``num_workers`` 0 and 2. The training default, ``num_workers="auto"``, leaves a core for the
training step and one for the verifier (``auto_num_workers``: 0 threads on 2 CPUs, 2 from 4 CPUs);
its row is marked ``*`` and is the one the budget is for. A row with more gather threads than that
has no core for the verifier, so its first read hashes on the cores that copy (shown for reference).
First reads are reported as: wall clock (median pair ratio), best (fastest round on / fastest off), per CPU
second of this process and the verifier together (the hashing is moved to another core, not
removed), and "alone": wall clock with ``verify_ahead=0`` (the loader hashing every image itself,
as on a platform without the helper). Steady: wall, cpu, and "min": the fastest of 300 interleaved
timings of gathering one batch (least sensitive to other jobs).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fastprogan.data import ImageLoader, create_dataset, open_dataset
from fastprogan.data.loader import auto_num_workers
from fastprogan.data.verifier import cpu_share

# resolution -> (images in the dataset, batch size). 250 MB-1 GB per level (built in ~35 s in all):
# more than the L3 cache, and 20-80 batches, so the first-read emulation's lead of verify_ahead
# batches is 5-10% of the dataset. (With the earlier 400/300/48 images it was 64%: re-marking a
# delivered image unchecked undid the helper's check of it for a coming batch of the next epoch, and
# the loader hashed 15-45% of its images itself, a cost a real first epoch never has.)
CASES = {128: (5120, 64), 256: (2560, 32), 1024: (320, 8)}


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
) -> tuple[float, float]:
    """(bytes per wall second, per CPU second) delivered by ImageLoader (at least ``seconds`` of batches).

    Per CPU second: this process's CPU time (all threads). Verification costs CPU work, so on a
    shared machine, where other jobs deschedule this one, CPU-time ratios show the cost far more
    steadily than wall-time ratios.
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
    return done / elapsed, done / max(cpu_elapsed, 1e-9)


def measure_first_reads(
    path: Path,
    resolution: int,
    num_workers: int,
    verify: bool,
    seconds: float = 0.3,
    verify_ahead: int = 4,
    dataset=None,
) -> tuple[float, float]:
    """(bytes per wall second, per CPU second) of a loader reading images it has never checked.

    The first epoch of a real level (30,000 CelebA-HQ images: hundreds of batches) is emulated on the
    smaller bench dataset: as each batch is returned, its images are marked unchecked again, so every
    image the loader meets is unchecked (it is not read again before the next epoch), while the
    background verifier keeps its steady lead of ``verify_ahead`` batches, as it would in a long
    first epoch (the lead is a small share of the dataset: see CASES). The verifier process is started before the timing (once per level and process in a
    run, as here when the same opened ``dataset`` is passed each round: about 0.1 s of another
    core); its CPU time counts in the per-CPU-second figure."""
    _, batch = CASES[resolution]
    ds = dataset if dataset is not None else open_dataset(path)
    loader = ImageLoader(
        ds, resolution, batch, num_workers=num_workers, verify=verify, verify_ahead=verify_ahead
    )
    level = ds.verified(resolution) if verify else None
    next(loader)  # start threads, first permutation, the verifier process
    if level is not None:
        level.state[:] = level.UNCHECKED
        level.all_sound = False
    helper = loader._background
    if helper is not None:
        helper.wait_ready()  # its interpreter's start is not part of a batch's cost
    # Only next() is timed, on and off alike: the emulation's own bookkeeping (the indices, the
    # reset; ~7 us of this thread per batch) is no loader cost. CPU time is the whole process's
    # (gather threads work on between calls) less this thread's bookkeeping.
    done, elapsed, bookkeeping = 0, 0.0, 0.0
    helper_cpu = helper.cpu_seconds() if helper is not None else None
    cpu_start = time.process_time()
    while elapsed < seconds:
        mark = time.thread_time()
        idx = loader._next_indices(loader.epoch, loader.offset)[0]  # the batch next() returns
        bookkeeping += time.thread_time() - mark
        start = time.perf_counter()
        done += next(loader).numel()
        elapsed += time.perf_counter() - start
        if level is not None:
            mark = time.thread_time()
            level.state[idx] = level.UNCHECKED  # delivered: unchecked again, read next epoch
            bookkeeping += time.thread_time() - mark
    cpu_elapsed = time.process_time() - cpu_start - bookkeeping
    if helper_cpu is not None:
        cpu_elapsed += (helper.cpu_seconds() or helper_cpu) - helper_cpu
    loader.close()
    return done / elapsed, done / max(cpu_elapsed, 1e-9)


def read_until_checked(loader: ImageLoader) -> None:
    """Read until the loader has seen its level all checked (it looks at each epoch's end; with
    drop_last an epoch leaves a few images out, so this may take a few epochs): the steady state."""
    level = loader.dataset.verified(loader.resolution)
    for _ in range(100 * loader.steps_per_epoch):
        if level.all_sound:
            return
        next(loader)
    raise AssertionError("the level never read as all checked")


def verify_ratios(
    path: Path, resolution: int, num_workers: int, rounds: int = 9, seconds: float = 0.3
) -> dict[str, float]:
    """Verify on/off ratios from rounds in this process: each kind's on and off runs back to back
    (which goes first alternates), the ratio of each pair, and the median over rounds (pairs cancel
    the minute-to-minute drift of this machine's speed). Kinds: ``steady`` (all images checked),
    ``first`` (none checked, with the background verifier), ``first_alone`` (none checked, the
    loader hashing every image itself, verify_ahead=0); ``*_cpu``: per CPU second. Also the median
    GB/s of verify off (``off_gbps``, steady; ``first_off_gbps``) and ``first_best_ratio``: the
    fastest first-read round on / the fastest off."""
    checked = open_dataset(path)  # one opened dataset: its images are checked just below
    read_until_checked(ImageLoader(checked, resolution, CASES[resolution][1]))
    first = {True: open_dataset(path), False: open_dataset(path), "alone": open_dataset(path)}  # one per kind

    def steady(verify: bool) -> tuple[float, float]:
        return measure(path, resolution, num_workers, seconds, verify, checked)

    def first_read(verify: bool) -> tuple[float, float]:
        return measure_first_reads(path, resolution, num_workers, verify, seconds, dataset=first[verify])

    def first_alone(verify: bool) -> tuple[float, float]:
        ds = first["alone"] if verify else first[False]
        return measure_first_reads(path, resolution, num_workers, verify, seconds, verify_ahead=0, dataset=ds)

    kinds = {"steady": steady, "first": first_read, "first_alone": first_alone}
    ratios: dict[str, list[float]] = {f"{k}{c}": [] for k in kinds for c in ("", "_cpu")}
    speeds: dict[str, dict[bool, list[float]]] = {k: {True: [], False: []} for k in kinds}
    for i in range(rounds):
        order = (False, True) if i % 2 == 0 else (True, False)
        for kind, run in kinds.items():
            got = {verify: run(verify) for verify in order}  # (wall, cpu) bytes/s, back to back
            ratios[kind].append(got[True][0] / got[False][0])
            ratios[f"{kind}_cpu"].append(got[True][1] / got[False][1])
            for verify in order:
                speeds[kind][verify].append(got[verify][0])
    out = {f"{k}_ratio": float(np.median(v)) for k, v in ratios.items()}
    out["off_gbps"] = float(np.median(speeds["steady"][False])) / 1e9
    out["first_off_gbps"] = float(np.median(speeds["first"][False])) / 1e9
    out["first_best_ratio"] = max(speeds["first"][True]) / max(speeds["first"][False])
    return out


def batch_time_ratios(path: Path, resolution: int, reps: int = 300) -> dict[str, float]:
    """on/off throughput ratios of gathering one batch, from the fastest of ``reps`` interleaved
    timings of each: verify off, and verify on once the level is all checked (steady: after the first
    epoch). The minimum filters out the descheduling that dominates wall times on a shared machine."""
    _, batch = CASES[resolution]
    ds = open_dataset(path)
    loaders = {
        "off": ImageLoader(ds, resolution, batch, verify=False),
        "steady": ImageLoader(ds, resolution, batch),
    }
    read_until_checked(loaders["steady"])
    idx = loaders["off"]._next_indices(0, 0)[0]  # the first batch of epoch 0: a typical scattered batch
    times: dict[str, list[float]] = {k: [] for k in loaders}
    for i in range(reps):
        for kind in ("off", "steady") if i % 2 == 0 else ("steady", "off"):
            start = time.perf_counter()
            loaders[kind]._gather(idx)
            times[kind].append(time.perf_counter() - start)
    t = {k: min(v) for k, v in times.items()}
    return {
        "gather_us": t["off"] * 1e6,
        "steady_us": t["steady"] * 1e6,
        "steady_min_ratio": t["off"] / t["steady"],
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
        f"{'wall':>6} {'best':>6} {'cpu':>6} {'alone':>6} | steady on/off: {'wall':>6} {'cpu':>6} {'min':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for resolution, (n, batch) in CASES.items():
                path = build(Path(tmp), resolution)
                for workers in (0, 2):
                    r = verify_ratios(path, resolution, workers)
                    m = batch_time_ratios(path, resolution)  # single-threaded gather: same for both rows
                    mark = "*" if workers == auto_num_workers() else " "
                    print(
                        f"{resolution:>5} {n:>6} {batch:>5} {workers:>6}{mark} {r['off_gbps']:>8.2f} | "
                        f"{'':>18} {r['first_ratio']:>6.3f} {r['first_best_ratio']:>6.3f} "
                        f"{r['first_cpu_ratio']:>6.3f} {r['first_alone_ratio']:>6.3f} | {'':>14} "
                        f"{r['steady_ratio']:>6.3f} {r['steady_cpu_ratio']:>6.3f} {m['steady_min_ratio']:>6.3f}",
                        flush=True,
                    )
            if repeat + 1 < repeats:
                print("-" * 20, flush=True)
    print(
        f"*: num_workers='auto' (the training default) is {auto_num_workers()} here ({cpu_share()} CPUs): "
        "the budget's rows; the others have no core for the verifier."
    )
    print("on/off: throughput with verification / without (1.0 = free); budget >= 0.85 for both.")
    print("first read: every image unchecked when the loader meets it (the first epoch of a level),")
    print("  with the background verifier process (verify_ahead=4); steady: all checked (later epochs).")
    print("wall: median over rounds of on/off runs back to back; best: fastest round / fastest round;")
    print("  cpu: the same per CPU second of this process plus the verifier's; alone: wall with")
    print("  verify_ahead=0 (the loader hashes every image itself); min: fastest of 300 interleaved")
    print("  one-batch gathers.")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
