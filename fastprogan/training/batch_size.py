"""``--batch auto``: the largest per-GPU minibatch that fits at a resolution, with a safety margin.

Probe: run one full training step (D with penalty + G) at the preset's per-GPU batch, double it until
the step runs out of memory or reaches MAX_AUTO_BATCH, take the largest size that worked, keep 80% of
it and round down to a multiple of the minibatch-stddev group. The probe trains throw-away copies, so
the run's weights, optimiser states and RNG streams are untouched. CUDA only: elsewhere the preset's
batch is used (and the log says so). The learning rate is not rescaled.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MAX_AUTO_BATCH = 1024  # per GPU; beyond this a bigger batch no longer buys throughput at ProGAN sizes
KEEP_FRACTION = 0.8


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def probe_batch_size(
    try_step: Callable[[int], None],
    *,
    start: int,
    multiple: int = 1,
    limit: int = MAX_AUTO_BATCH,
    keep: float = KEEP_FRACTION,
    on_oom: Callable[[], None] | None = None,
) -> int:
    """Largest working batch from doubling ``start`` (<= ``limit``), times ``keep``, rounded down to
    ``multiple`` (at least ``multiple``). ``try_step(b)`` raises an out-of-memory error when b does not
    fit; ``on_oom`` frees memory after one (e.g. ``torch.cuda.empty_cache``)."""
    best = 0
    batch = max(start, multiple)
    while batch <= limit:
        try:
            try_step(batch)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            if on_oom is not None:
                on_oom()
            break
        best = batch
        batch *= 2
    if best == 0:
        raise RuntimeError(f"--batch auto: even a batch of {max(start, multiple)} does not fit in memory")
    kept = int(best * keep) // multiple * multiple
    return max(kept, multiple)
