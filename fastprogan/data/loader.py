"""ImageLoader: an endless, resumable, rank-sharded stream of uint8 batches from a dataset.

Order (global, independent of the process count). Epoch ``e`` is the permutation
``numpy.random.default_rng([seed, e]).permutation(N)``. The job's GLOBAL batches of ``B * W`` images
(B per rank, W ranks) are consecutive slices of it, and rank ``r`` takes entries ``r, r + W, ...`` of
each global batch (so a 1-process loader with batch ``B * W`` yields exactly the union, in global
order). With ``drop_last`` (the default) a global batch that would run past the end of the
permutation starts the next epoch instead, so every batch is full and all ranks change epoch at the
same step. Without it, the epoch's last global batch may be smaller (and uneven over ranks).

Position. The stream position is ``(epoch, offset)``: the epoch and how many entries of the epoch's
permutation the whole job has consumed. ``state_dict()`` saves it (plus the seed); a loader built with
``start=state`` (or given ``load_state_dict(state)``) yields exactly the batches the saved one would
have yielded next. Because the position counts global images, not batches or ranks, it carries over
to a loader at another resolution, batch size or WORLD SIZE: the new loader continues the same epoch
permutation where the old one stopped (``ImageLoader(ds, 2 * res, new_batch, seed=seed,
world_size=new_w, start=old.state_dict())``), and every rank holds the same position, so one saved
state restores any job. (States of version 1 counted a rank's share; they load as offset x world_size,
which is the same position.)

Integrity. With ``verify`` (the default) every image is checked against the manifest's per-image
xxh3_64 the first time this process reads it, in the same visit as its copy into the batch and
before the batch is returned (``copy_and_hash``: the bytes are read from memory once), and
remembered as checked on the dataset object, so later epochs, phases and loaders of the same opened
dataset cost nothing. Where a spare core exists (``verify_ahead`` > 0, a level of at least 16 MB,
POSIX, more usable CPUs than gather threads + 1), the level's background verifier process
(``fastprogan.data.verifier``) hashes the images of the next ``verify_ahead`` batches from the page
cache while this loader copies, so the loader mostly finds them checked; results are the same with or
without it. A corrupt image raises CorruptImageError naming its index and file; with
``skip_bad`` it is replaced in its batch by a sound image of the same batch (the batch keeps its size
and the stream its position), counted in ``skipped``, and reported once through ``log``.

Workers. ``num_workers`` threads gather up to ``prefetch`` (default ``num_workers``) batches ahead
(copying from the page cache releases the GIL); ``"auto"`` (the trainer's default) picks
``auto_num_workers()``, which leaves a core for the caller and one for the background verifier. The
batch contents depend only on (seed, position), never on the worker count. From a warm page cache
``num_workers=0`` is already several GB/s; threads help when the data comes from disk or the training
step leaves the CPU idle.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from fastprogan.data import verifier
from fastprogan.data.checksums import HASH_NAME, VerifiedLevel, copy_and_hash
from fastprogan.data.create import level_filename
from fastprogan.data.errors import CorruptImageError
from fastprogan.data.shards import ShardedDataset, open_dataset

STATE_VERSION = 2
# Below this many bytes per image, one vectorised np.take beats a per-image copy loop.
_SMALL_IMAGE_BYTES = 16 << 10


def auto_num_workers() -> int:
    """Gather threads for ``num_workers="auto"`` (the training default): at most 2, leaving one of
    this process's CPUs (``verifier.cpu_share()``: its usable CPUs over the node's ranks) for the
    caller's thread (the training step) and one for the level's background verifier.

    1-2 CPUs: 0 (the caller gathers; a 2-core machine keeps its second core for the verifier), 3: 1,
    4 or more: 2. On the 2-core build machine a second gather thread bought little (verify off, warm
    cache: 0.95x the GB/s of 0 threads at 128 px, 1.6x at 1024 px), while taking the verifier's core
    made every first read hash on the copying cores: 0.58-0.89 of verify off, against 0.84-0.99
    (medians 0.89-0.94) with the helper on its own core (``benchmarks/bench_loader.py``).
    """
    return max(0, min(2, verifier.cpu_share() - 2))


class ImageLoader:
    """Endless iterator of uint8 CPU tensors [B, C, R, R] from one resolution of a dataset."""

    def __init__(
        self,
        dataset: ShardedDataset | str | os.PathLike,
        resolution: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int | str = 0,
        pin_memory: bool | None = None,
        drop_last: bool = True,
        start: dict[str, Any] | None = None,
        prefetch: int | None = None,
        verify: bool = True,
        skip_bad: bool = False,
        log: Callable[[str], None] | None = None,
        verify_ahead: int = 4,
    ) -> None:
        if not isinstance(dataset, ShardedDataset):
            dataset = open_dataset(dataset)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if num_workers == "auto":
            num_workers = auto_num_workers()
        if isinstance(num_workers, bool) or not isinstance(num_workers, int):
            raise ValueError(f"num_workers must be an int >= 0 or 'auto', got {num_workers!r}")
        if batch_size < 1 or num_workers < 0 or seed < 0 or verify_ahead < 0:
            raise ValueError("batch_size must be >= 1, num_workers >= 0, seed >= 0 and verify_ahead >= 0")
        self.dataset = dataset
        self.resolution = resolution
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.drop_last = drop_last
        cuda = torch.cuda.is_available()
        if pin_memory and not cuda:
            raise ValueError("pin_memory=True needs CUDA; pass None (auto) or False")
        self.pin_memory = cuda if pin_memory is None else bool(pin_memory)
        # Memory-mapped uint8 [N, C, R, R], as a plain ndarray: indexing an np.memmap runs its Python
        # __array_finalize__ per image, 2.3 of the 5.3 us a 128 px image's copy took (1.75x faster).
        self._images = dataset.images(resolution).view(np.ndarray)
        # Integrity (read path): the level's checksums and this process's checked/corrupt record.
        self._verified: VerifiedLevel | None = dataset.verified(resolution) if verify else None
        self.skip_bad = skip_bad
        self.skipped = 0  # reads of corrupt images replaced in their batch (skip_bad)
        self._log = log
        self._skip_lock = threading.Lock()
        self._pending_log: list[str] = []  # written by gather threads, logged from __next__
        # The level's background verifier (fastprogan.data.verifier), asked for at the first batch,
        # and the batches published to it: (position, ring sequence after it), in stream order.
        level_bytes = dataset.num_images * dataset.channels * resolution * resolution
        worth_it = (
            verifier.supported()
            and level_bytes >= verifier.BACKGROUND_MIN_BYTES
            # A spare core beside this thread and the gather threads: without one the helper only
            # competes with the copies (2 workers on the 2-core build machine: first read 0.59-0.66
            # of verify off with the helper, 0.50-0.75 without).
            and verifier.cpu_share() > num_workers + 1
        )
        self.verify_ahead = verify_ahead if verify and worth_it else 0  # 0: the loader hashes alone
        self._background: verifier.BackgroundVerifier | None = None
        self._ahead: deque[tuple[tuple[int, int], int]] = deque()
        self._ahead_pos = (0, 0)  # position after the last batch published
        n = dataset.num_images
        self.global_batch = batch_size * world_size
        if drop_last:
            self.epoch_length = n // self.global_batch * self.global_batch  # global entries per epoch
        else:
            self.epoch_length = n
        if self.epoch_length == 0:
            raise ValueError(
                f"batch_size {batch_size} x world_size {world_size} is more than the {n} images"
                + (" (drop_last=True)" if drop_last else "")
            )
        self.epoch = 0
        self.offset = 0
        self._perm_cache: dict[int, np.ndarray] = {}
        self._prefetch = prefetch if prefetch is not None else num_workers
        self._pool: ThreadPoolExecutor | None = None
        self._queue: deque[tuple[Future, int, int]] = deque()  # (batch, epoch after, offset after)
        self._plan = (0, 0)  # position after the last batch queued
        if start is not None:
            self.load_state_dict(start)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (the last may be smaller when drop_last is False)."""
        return -(-self.epoch_length // self.global_batch)

    def _perm(self, epoch: int) -> np.ndarray:
        """The epoch's global order: int64 [N]."""
        if epoch not in self._perm_cache:
            if len(self._perm_cache) > 2:
                self._perm_cache.pop(min(self._perm_cache))
            self._perm_cache[epoch] = np.random.default_rng([self.seed, epoch]).permutation(
                self.dataset.num_images
            )
        return self._perm_cache[epoch]

    def _next_indices(self, epoch: int, offset: int) -> tuple[np.ndarray, int, int]:
        """This rank's dataset indices of the global batch at (epoch, offset), and the position after."""
        n, g = self.dataset.num_images, self.global_batch
        # A carried-over position (another batch size) where a full global batch no longer fits.
        if offset >= self.epoch_length or (self.drop_last and offset + g > n):
            epoch, offset = epoch + 1, 0
        global_idx = self._perm(epoch)[offset : offset + g]  # [<= B * W]
        offset += len(global_idx)
        if offset >= self.epoch_length or (self.drop_last and offset + g > n):
            epoch, offset = epoch + 1, 0
        return global_idx[self.rank :: self.world_size], epoch, offset

    def _gather(self, idx: np.ndarray) -> torch.Tensor:
        """Copy images ``idx`` from the memory map into a fresh (pinned) tensor [B, C, R, R]; with
        verify, hash the images not yet checked in this process as they are copied."""
        c, r = self.dataset.channels, self.resolution
        out = torch.empty((len(idx), c, r, r), dtype=torch.uint8, pin_memory=self.pin_memory)
        dst = out.numpy()
        level = self._verified
        state = None  # [B] this process's verdicts so far, where some of the batch needs checking
        if level is not None and not level.all_sound:  # all sound (every later epoch): verify off's copy
            state = level.state[idx]
            # A batch already checked and sound (the helper got there first): the plain copy too. One
            # bytes compare: 0.6 us, against 8.2 us for two numpy tests (1.6% of a 128 px batch).
            if state.tobytes() == VerifiedLevel.SOUND_BYTES * len(idx):
                state = None
        new: list[int] = []  # dataset indices found corrupt by this gather (reported once)
        images = self._images
        if c * r * r < _SMALL_IMAGE_BYTES:
            np.take(images, idx, axis=0, out=dst)
        elif state is None:
            # Visit the file in ascending order (friendlier to readahead); each copy is one memcpy.
            for j in np.argsort(idx, kind="stable").tolist():
                dst[j] = images[idx[j]]
        else:
            # An unchecked image is hashed in the same visit (copy_and_hash: its bytes are read from
            # memory once; a second pass over the batch would read them from L3 or memory again).
            # Python lists: this loop's per-image overhead is part of the measured cost.
            assert level is not None
            indices, record = idx.tolist(), level.record
            todo = (state == VerifiedLevel.UNCHECKED).tolist()  # [B]
            for j in np.argsort(idx, kind="stable").tolist():
                i = indices[j]
                if todo[j]:
                    if record(i, copy_and_hash(images[i], dst[j]))[1]:
                        new.append(i)
                else:
                    dst[j] = images[i]
        if state is not None:  # hash what np.take copied; known-corrupt images; skip_bad
            self._check(idx, dst, new)
        return out

    def _check(self, idx: np.ndarray, dst: np.ndarray, new: list[int]) -> None:
        """Verify the images of this batch not yet checked in this process (dst [B, C, R, R] holds
        the copies); raise on a corrupt one, or with skip_bad replace it by a sound one of the batch.
        ``new``: dataset indices the gather itself just found corrupt (logged once, like those found
        here)."""
        level = self._verified
        assert level is not None
        # Only unchecked (0) and known-corrupt (2) entries need work (the copy loop may have checked
        # some since the gather's lookup: read the verdicts again).
        bad = []  # batch positions of corrupt images
        for j in np.flatnonzero(level.state[idx] != VerifiedLevel.SOUND):
            i = int(idx[j])
            if level.state[i] == VerifiedLevel.CORRUPT:  # found earlier (here, or by the helper)
                bad.append(j)
                if level.report(i):
                    new.append(i)
                continue
            sound, newly = level.check(i, dst[j])
            if not sound:
                bad.append(j)
                if newly:
                    new.append(i)
        if not bad:
            return
        file = self.dataset.path / level_filename(self.resolution)
        if not self.skip_bad:
            i = int(idx[bad[0]])
            raise CorruptImageError(
                f"{file}: image {i} does not match its {HASH_NAME} checksum in the manifest (the pixel "
                f"data was modified or damaged); check the dataset with `fastprogan dataset verify "
                f"{self.dataset.path}` and rebuild it, or pass --skip-bad to train without such images",
                index=i,
                file=file,
            )
        good = np.setdiff1d(np.arange(len(idx)), bad)
        if len(good) == 0:
            raise CorruptImageError(
                f"{file}: every image of a batch is corrupt ({', '.join(str(int(idx[j])) for j in bad)}); "
                f"check the dataset with `fastprogan dataset verify {self.dataset.path}` and rebuild it",
                index=int(idx[bad[0]]),
                file=file,
            )
        for j in bad:
            # The nearest sound image before it in the batch (else after): deterministic for the data.
            before = good[good < j]
            dst[j] = dst[before[-1] if len(before) else good[0]]
        with self._skip_lock:
            self.skipped += len(bad)
            total = len(level.corrupt)
            self._pending_log += [
                f"skipped corrupt image {i} of {file} ({HASH_NAME} mismatch; --skip-bad): "
                f"{total} corrupt image(s) at {self.resolution}px so far, {self.skipped} read(s) replaced"
                for i in new
            ]

    def _flush_log(self) -> None:
        """Log the skip messages of the gather threads from the caller's thread (once each)."""
        if not self._pending_log:
            return
        with self._skip_lock:
            messages, self._pending_log = self._pending_log, []
        if self._log is not None:
            for message in messages:
                self._log(message)

    def _verify_ahead(self, position: tuple[int, int]) -> None:
        """A gather of the batch at ``position`` (the next in stream order) starts: keep the level's
        background verifier ``verify_ahead`` batches ahead of it (no-op without one)."""
        if self.verify_ahead == 0:
            return
        if self._background is None or not self._background.alive:
            level = self._verified
            assert level is not None
            self._background = level.background(self.dataset.path / level_filename(self.resolution))
            if self._background is None:  # level all checked, or the helper failed: stop asking
                self.verify_ahead = 0  # (asking costs an O(N) look at the verdicts per batch)
                return
            self._ahead.clear()
        bg = self._background
        if self._ahead and self._ahead[0][0] == position:
            bg.reached(self._ahead.popleft()[1])  # the gather checks what the helper has not
        else:  # first batch, or the stream was repositioned: publish from the batch after this one
            self._ahead.clear()
            self._ahead_pos = self._next_indices(*position)[1:]
        while len(self._ahead) < self.verify_ahead:
            idx, epoch, offset = self._next_indices(*self._ahead_pos)
            self._ahead.append((self._ahead_pos, bg.publish(idx)))
            self._ahead_pos = (epoch, offset)

    def _fill(self) -> None:
        assert self._pool is not None
        while len(self._queue) < max(self._prefetch, 1):
            self._verify_ahead(self._plan)
            idx, epoch, offset = self._next_indices(*self._plan)
            self._queue.append((self._pool.submit(self._gather, idx), epoch, offset))
            self._plan = (epoch, offset)

    def __iter__(self) -> ImageLoader:
        return self

    def __next__(self) -> torch.Tensor:
        if self.num_workers == 0:
            self._verify_ahead((self.epoch, self.offset))
            idx, epoch, offset = self._next_indices(self.epoch, self.offset)
            batch = self._gather(idx)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="fastprogan-loader")
                self._plan = (self.epoch, self.offset)
            self._fill()
            future, epoch, offset = self._queue.popleft()
            batch = future.result()
            self._fill()
        if epoch != self.epoch and self._verified is not None:
            self._verified.refresh()  # an epoch over: is every image checked now (then no lookups)?
        self.epoch, self.offset = epoch, offset
        self._flush_log()
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The position of the next batch, as plain ints (JSON and ``weights_only`` safe).

        It holds no rank, world size or batch size: it is the same on every rank, and on every world
        size at the same point of the global sequence (what checkpoints store once per job).
        """
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "epoch": self.epoch,
            "offset": self.offset,
            "num_images": self.dataset.num_images,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from ``state_dict()``, possibly of a loader at another resolution).

        Restores the seed and the global (epoch, offset) position; any world size continues the same
        global sequence. The dataset must have the same number of images.
        """
        version = int(state.get("version", -1))
        if version not in (1, STATE_VERSION):
            raise ValueError(f"unknown ImageLoader state version {state.get('version')!r}")
        if int(state["num_images"]) != self.dataset.num_images:
            raise ValueError(
                f"state is for a dataset of {state['num_images']} images, this one has {self.dataset.num_images}"
            )
        self._drain()
        self.seed = int(state["seed"])
        self._perm_cache.clear()
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        if version == 1:  # offset counted one rank's share (all ranks equal): scale to the global count
            self.offset *= int(state["world_size"])
        self._plan = (self.epoch, self.offset)

    def _drain(self) -> None:
        """Forget the batches gathered ahead (they belong to the old position)."""
        while self._queue:
            future, _, _ = self._queue.popleft()
            future.cancel()
        self._plan = (self.epoch, self.offset)

    def close(self) -> None:
        """Stop the prefetch threads (the loader can still be used afterwards, it restarts them)."""
        self._drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return (
            f"ImageLoader(resolution={self.resolution}, batch_size={self.batch_size}, seed={self.seed}, "
            f"rank={self.rank}/{self.world_size}, epoch={self.epoch}, offset={self.offset})"
        )
