"""Per-image checksums of every level: xxh3_64 of each image's uint8 [C, r, r] bytes.

Why xxh3_64 and not CRC32 or sha256: the loader checks the images it reads, and its copies run at
12-18 GB/s from a warm page cache (an unloaded 2-core VM). xxh3_64 is the fastest of the three (measured on the 2-core build
machine, one call per 196 KB image already in L2: xxh3_64 ~60 GB/s; an earlier, busier measurement
had 6.9 GB/s for xxh3_64 and 2.1 GB/s for zlib.crc32; sha256 is slower still). Even so, hashing is a
fifth of a copy's cost, so the loader verifies each image once per process (``VerifiedLevel``; later
epochs cost one lookup per batch) and hashes it while its bytes are in cache (``copy_and_hash``).
docs/datasets.md has the measured ratios.

Stored in the manifest as one hex string per level (``files[r]["xxh3_64"]``): 16 hex digits per image,
big-endian, in dataset order. One string per level keeps the manifest compact and fast to parse
(70,000 images x 10 levels would otherwise be 700,000 JSON strings).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import numpy as np
import xxhash

if TYPE_CHECKING:
    from fastprogan.data.verifier import BackgroundVerifier

HASH_NAME = "xxh3_64"
_HEX_DIGITS = 16


def image_hash(image: np.ndarray) -> int:
    """xxh3_64 (seed 0) of one C-contiguous uint8 image's bytes."""
    return xxhash.xxh3_64_intdigest(np.ascontiguousarray(image))


# An image at least this large does not fit in a core's L2 cache (1 MB on the build machine), so it
# is hashed where it lies first (the hash streams it from memory into L3) and then copied from cache.
# A smaller one is copied first and the copy hashed while it is still in L2. Throughput of one epoch
# with hashing / copy alone, fastest of 25 interleaved rounds on the 2-core build machine: 1024 px
# (3 MB) hash-then-copy 0.95-0.97, copy-then-hash 0.83-0.87; 256 px (196 KB) copy-then-hash
# 0.78-0.84, hash-then-copy 0.72; 128 px (48 KB) copy-then-hash 0.82-0.84, hash-then-copy 0.78-0.80.
# Copying the whole batch and hashing it afterwards (from L3; the loader's earlier way): 0.74-0.80.
_HASH_SOURCE_FIRST_BYTES = 1 << 20


def copy_and_hash(source: np.ndarray, out: np.ndarray) -> int:
    """Copy one C-contiguous image ``source`` (e.g. a memory-mapped slice) into ``out`` and return the
    xxh3_64 of its bytes, reading them from memory once: the second pass hits cache."""
    # xxhash reads the buffers directly (a non-contiguous one raises, never hashes the wrong bytes).
    if source.nbytes >= _HASH_SOURCE_FIRST_BYTES:
        digest = xxhash.xxh3_64_intdigest(source)  # from the mapping; the copy reads what was hashed
        out[...] = source
        return digest
    out[...] = source
    return xxhash.xxh3_64_intdigest(out)


def level_hashes(images: np.ndarray, block_bytes: int = 8 << 20) -> np.ndarray:
    """xxh3_64 of every image of a level [N, C, r, r] (e.g. a memory map), read in blocks: uint64 [N]."""
    out = np.empty(len(images), dtype=np.uint64)
    step = max(1, block_bytes // max(1, images[0].nbytes)) if len(images) else 1
    for start in range(0, len(images), step):
        chunk = np.ascontiguousarray(images[start : start + step])
        for i, img in enumerate(chunk):
            out[start + i] = xxhash.xxh3_64_intdigest(img)
    return out


def encode_hashes(hashes: np.ndarray) -> str:
    """uint64 [N] -> the manifest's hex string (16 digits per image, big-endian)."""
    return hashes.astype(">u8").tobytes().hex()


def decode_hashes(text: str, count: int, where: str) -> np.ndarray:
    """The manifest's hex string -> uint64 [count]; ValueError naming ``where`` if it is malformed."""
    if not isinstance(text, str) or len(text) != count * _HEX_DIGITS:
        got = len(text) // _HEX_DIGITS if isinstance(text, str) else type(text).__name__
        raise ValueError(f"{where}: {HASH_NAME} holds {got} checksums, expected {count}")
    try:
        return np.frombuffer(bytes.fromhex(text), dtype=">u8").astype(np.uint64)
    except ValueError:
        raise ValueError(f"{where}: {HASH_NAME} is not a hex string") from None


class VerifiedLevel:
    """Which images of one level this process has checked: 0 unchecked, 1 sound, 2 corrupt.

    Shared by every loader of one opened dataset (``ShardedDataset.verified(r)``), so an image is
    hashed at most once per process however many loaders, epochs or phases read it, and, once shared
    (``verifier.shared_level_record``), with the level's background verifier process (``fastprogan.data.verifier``), which
    checks the images of the next batches while the loader copies. Concurrent writers (loader threads,
    the helper) may both hash the same unchecked image; they write the same verdict, so no lock is
    needed for the state itself (only for the list of corrupt images reported).
    """

    UNCHECKED, SOUND, CORRUPT = 0, 1, 2
    SOUND_BYTES = bytes((SOUND,))  # x B: the bytes of a batch's verdicts when all are sound

    def __init__(self, expected: np.ndarray) -> None:
        self.expected = expected  # uint64 [N]
        self._expected = expected.tolist()  # the same as Python ints: a cheaper per-image compare
        self.state = np.zeros(len(expected), dtype=np.uint8)  # [N]
        # Every image checked and sound (``refresh``): loaders then skip the per-batch lookup.
        self.all_sound = False
        self.corrupt: list[int] = []  # dataset indices found corrupt, in the order reported
        self._reported: set[int] = set()  # the same, for the once-only test
        self._lock = threading.Lock()
        self._shared_file = None  # the anonymous file behind ``state`` once shared
        self._background = None  # the level's BackgroundVerifier, once started

    def refresh(self) -> bool:
        """Whether every image is now checked and sound; an O(N) look until it is, so loaders ask once
        per epoch. Images are never unchecked again, so once True it stays True (a corrupt image keeps
        it False: every batch holding it is still handled)."""
        if not self.all_sound:
            self.all_sound = bool((self.state == self.SOUND).all())
        return self.all_sound

    def check(self, index: int, image: np.ndarray) -> tuple[bool, bool]:
        """Hash ``image`` (the copy the loader just made of dataset image ``index``) and record the
        verdict: ``record(index, image_hash(image))``."""
        return self.record(index, image_hash(image))

    def record(self, index: int, digest: int) -> tuple[bool, bool]:
        """Record the verdict for dataset image ``index`` whose bytes hash to ``digest``.

        Returns (sound, newly found corrupt): the second is True for exactly one caller per corrupt
        image in this process, so it is reported once.
        """
        if digest == self._expected[index]:
            self.state[index] = self.SOUND
            return True, False
        self.state[index] = self.CORRUPT
        return False, self.report(index)

    def report(self, index: int) -> bool:
        """Note that corrupt image ``index`` was met; True the first time in this process (so it is
        logged once, whoever found it: a loader's hash or the background verifier's)."""
        with self._lock:
            if index in self._reported:
                return False
            self._reported.add(index)
            self.corrupt.append(int(index))
            return True

    def background(self, level_file: os.PathLike | str) -> BackgroundVerifier | None:
        """The level's background verifier (``fastprogan.data.verifier``), started on first use (the
        loader decides whether one is worth it); None once every image is checked, or where the helper
        failed to start or died with an error. A helper that finished (the level all checked) is
        started again if images become unchecked."""
        from fastprogan.data import verifier

        with self._lock:
            if self._background is not None and self._background.alive:
                return self._background
            if (
                (self._background is not None and self._background.failed)  # the loader hashes alone
                or bool((self.state != self.UNCHECKED).all())
            ):
                return None
            if self._shared_file is None:
                self._shared_file, self.state = verifier.shared_level_record(self.expected, self.state)
            try:
                self._background = verifier.BackgroundVerifier(self._shared_file, level_file, len(self.state))
            except OSError:
                return None
            return self._background
