"""Timing: CUDA events (or the host clock on CPU), warm-up, median and interquartile range; the GPU-busy
fraction from torch.profiler; peak memory.

Every timed call on CUDA is bracketed by its own pair of events on the current stream, so the time is
device time from the first to the last kernel of the call, host gaps between kernels included (that is
the host overhead the GPU-busy fraction makes visible).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Per-call times in ms: median and IQR (q75 - q25) over ``reps`` timed calls after warm-up."""

    median_ms: float
    iqr_ms: float
    reps: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times_ms: list[float]) -> Timing:
    """Median and IQR of a list of per-call times."""
    if not times_ms:
        raise ValueError("no timed calls")
    if len(times_ms) == 1:
        return Timing(times_ms[0], 0.0, 1)
    q1, _, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
    return Timing(statistics.median(times_ms), q3 - q1, len(times_ms))


def time_calls(
    fn: Callable[[], object], device: torch.device, *, warmup: int, reps: int, max_s: float | None = None
) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then up to ``reps`` timed calls (fewer once ``max_s`` of
    timed calls have passed, at least 3)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    started = time.perf_counter()
    if device.type == "cuda":
        events = []
        for i in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
            if max_s is not None and i >= 2 and time.perf_counter() - started > max_s:
                break
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in events]
    else:
        for i in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
            if max_s is not None and i >= 2 and time.perf_counter() - started > max_s:
                break
    return summarize(times)


def _event_device_us(event: object) -> float:
    """Duration (us) of one device-side profiler event (its own time range: stable since torch 1.x)."""
    tr = getattr(event, "time_range", None)
    return float(tr.end - tr.start) if tr is not None else 0.0


def kernel_ms_per_call(fn: Callable[[], object], device: torch.device, calls: int = 1) -> float | None:
    """Sum of the device activity (kernels, memcpy, memset) per call of ``fn``, from torch.profiler.

    None off CUDA, or when the profiler cannot record device activity here (then the row has no
    GPU-busy fraction but keeps its timings).
    """
    if device.type != "cuda":
        return None
    try:
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    _sync(device)
    try:
        # Device activity only: recording every CPU op of an iteration (thousands) would cost seconds per
        # row to parse, and only the device side is summed.
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                fn()
            _sync(device)
        events = prof.events()
    except Exception:  # no CUPTI in the container, a profiler API change: the row keeps its times
        return None
    total_us = 0.0
    for event in events:
        if getattr(event, "device_type", None) == DeviceType.CUDA:
            total_us += _event_device_us(event)
    return total_us / 1e3 / calls if total_us > 0 else None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda" and hasattr(torch.cuda, "reset_peak_memory_stats"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """torch.cuda.max_memory_allocated since the last reset, in MiB (None on CPU: no allocator peak)."""
    if device.type != "cuda" or not hasattr(torch.cuda, "max_memory_allocated"):
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
