"""A minimal stand-in for ``fastprogan.data`` (branch ``data``), used only while it is not merged.

Same API as the contract: open_dataset, ImageLoader (state_dict/load_state_dict, start=), prepare_reals,
fade_reals, materialize_default_dataset. The dataset is procedural (blobs), 16 px, 1 channel.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import torch


class _Dataset:
    def __init__(self, path):
        self.path = Path(path)
        meta = json.loads((self.path / "meta.json").read_text())
        self.num_images, self.channels, self.max_resolution = meta["n"], meta["c"], meta["r"]
        self.resolutions = [2**k for k in range(2, int(np.log2(self.max_resolution)) + 1)]
        top = np.load(self.path / "images.npy").astype(np.float64)
        self._levels = {self.max_resolution: top}
        r = self.max_resolution
        while r > 4:
            x = self._levels[r]
            self._levels[r // 2] = x.reshape(*x.shape[:2], r // 2, 2, r // 2, 2).mean(axis=(3, 5))
            r //= 2

    def images(self, res):
        return np.clip(np.rint(self._levels[res]), 0, 255).astype(np.uint8)


def open_dataset(path):
    if not (Path(path) / "meta.json").is_file():
        raise ValueError(f"{path}: not a dataset")
    return _Dataset(path)


def materialize_default_dataset(out_dir, *, resolution=16, channels=1, progress=False):
    out = Path(out_dir) / "standin"
    if (out / "meta.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:resolution, 0:resolution]
    n = 512
    cx, cy, s = rng.uniform(4, 12, n), rng.uniform(4, 12, n), rng.uniform(1.5, 4, n)
    img = 255 * np.exp(
        -((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2) / (2 * s[:, None, None] ** 2)
    )
    np.save(out / "images.npy", img[:, None].astype(np.uint8))
    (out / "meta.json").write_text(json.dumps({"n": n, "c": channels, "r": resolution}))
    return out


class ImageLoader:
    def __init__(
        self,
        dataset,
        resolution,
        batch_size,
        *,
        seed=0,
        rank=0,
        world_size=1,
        num_workers=0,
        pin_memory=None,
        drop_last=True,
        start=None,
    ):
        self.dataset, self.resolution, self.batch_size = dataset, resolution, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self._images = dataset.images(resolution)
        self.epoch_length = (dataset.num_images // world_size) // batch_size * batch_size
        self.epoch, self.offset = 0, 0
        if start is not None:
            self.load_state_dict(start)

    def __iter__(self):
        return self

    def __next__(self):
        if self.offset + self.batch_size > self.epoch_length:
            self.epoch, self.offset = self.epoch + 1, 0
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.dataset.num_images)
        share = perm[self.rank :: self.world_size]
        idx = share[self.offset : self.offset + self.batch_size]
        self.offset += self.batch_size
        return torch.from_numpy(self._images[np.sort(idx)][np.argsort(np.argsort(idx))])

    def state_dict(self):
        return {"seed": self.seed, "epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state):
        self.seed, self.epoch, self.offset = state["seed"], state["epoch"], state["offset"]

    def close(self):
        pass


def prepare_reals(batch_uint8, device, *, mirror=False, generator=None, dtype=torch.float32):
    x = batch_uint8.to(device).to(dtype) / 127.5 - 1
    if mirror:
        flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)
    return x


def fade_reals(x, alpha):
    if alpha >= 1:
        return x
    n, c, h, w = x.shape
    coarse = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))
    coarse = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3)
    return torch.lerp(coarse, x, alpha)


def as_module() -> types.ModuleType:
    mod = types.ModuleType("fastprogan.data")
    for name in ("open_dataset", "materialize_default_dataset", "ImageLoader", "prepare_reals", "fade_reals"):
        setattr(mod, name, globals()[name])
    mod.__file__ = __file__
    return mod
