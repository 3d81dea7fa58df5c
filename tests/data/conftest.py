"""Shared helpers for the dataset tests: small images written with Pillow into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _ref_pyramid(top: np.ndarray) -> dict[int, np.ndarray]:
    """Independent reference: float64 reshape-mean chain from the top level, rounding only on write."""
    x = top.astype(np.float64)  # [..., C, R, R]
    out = {top.shape[-1]: top}
    while x.shape[-1] > 4:
        h = x.shape[-1]
        x = x.reshape(*x.shape[:-2], h // 2, 2, h // 2, 2).mean(axis=(-3, -1))
        out[h // 2] = np.rint(x).clip(0, 255).astype(np.uint8)
    return out


@pytest.fixture
def ref_pyramid():
    return _ref_pyramid


@pytest.fixture
def write_images():
    """write_images(folder, n, size=(w, h), mode='RGB', ext='png', seed=0) -> {relative name: array}."""

    def _write(
        folder: Path, n: int, size=(32, 32), mode: str = "RGB", ext: str = "png", seed: int = 0
    ) -> dict[str, np.ndarray]:
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        w, h = size
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        written = {}
        for i in range(n):
            # Smooth-ish content (a gradient plus noise) so JPEG stays close to the source.
            base = np.linspace(0, 200, w)[None, :] + np.linspace(0, 40, h)[:, None]
            arr = (base[..., None] if mode == "RGB" else base) + rng.integers(0, 16, shape)
            arr = arr.clip(0, 255).astype(np.uint8)
            name = f"img_{seed}_{i:03d}.{ext}"
            Image.fromarray(arr).save(folder / name, **({"quality": 95} if ext == "jpg" else {}))
            written[name] = arr
        return written

    return _write
