"""Per-image checksums of every level: xxh3_64 of each image's uint8 [C, r, r] bytes.

Why xxh3_64 and not CRC32 or sha256: the loader checks the images it reads, and it streams at ~5 GB/s
from a warm page cache. Measured on the 2-core build machine, one call per 196 KB image: xxh3_64
6.9 GB/s, zlib.crc32 2.1 GB/s (sha256 is slower still). Even xxh3 would cost a third of the loader's
throughput if every read were hashed, so the loader verifies each image once per process
(``VerifiedLevel``) and later epochs cost nothing (docs/datasets.md has the measured ratios).

Stored in the manifest as one hex string per level (``files[r]["xxh3_64"]``): 16 hex digits per image,
big-endian, in dataset order. One string per level keeps the manifest compact and fast to parse
(70,000 images x 10 levels would otherwise be 700,000 JSON strings).
"""

from __future__ import annotations

import threading

import numpy as np
import xxhash

HASH_NAME = "xxh3_64"
_HEX_DIGITS = 16


def image_hash(image: np.ndarray) -> int:
    """xxh3_64 (seed 0) of one C-contiguous uint8 image's bytes."""
    return xxhash.xxh3_64_intdigest(np.ascontiguousarray(image))


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
    hashed at most once per process however many loaders, epochs or phases read it. Concurrent loader
    threads may both hash the same unchecked image; they write the same verdict, so no lock is needed
    for the state itself (only for the list of corrupt images found).
    """

    UNCHECKED, SOUND, CORRUPT = 0, 1, 2

    def __init__(self, expected: np.ndarray) -> None:
        self.expected = expected  # uint64 [N]
        self.state = np.zeros(len(expected), dtype=np.uint8)  # [N]
        self.corrupt: list[int] = []  # dataset indices found corrupt, in the order found
        self._lock = threading.Lock()

    def check(self, index: int, image: np.ndarray) -> tuple[bool, bool]:
        """Hash ``image`` (the copy the loader just made of dataset image ``index``).

        Returns (sound, newly found corrupt): the second is True for exactly one caller per corrupt
        image in this process, so it is reported once.
        """
        if image_hash(image) == int(self.expected[index]):
            self.state[index] = self.SOUND
            return True, False
        with self._lock:
            if self.state[index] == self.CORRUPT:
                return False, False
            self.state[index] = self.CORRUPT
            self.corrupt.append(int(index))
            return False, True
