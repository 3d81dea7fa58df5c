"""Sliced Wasserstein distance between Laplacian-pyramid patch statistics (Karras et al. 2018, App. D).

Protocol, as numbered in the docstrings below:
  1. Laplacian pyramid of each uint8 RGB image in float32 on 0..255, from full resolution down to 16x16.
  2. Per image and level, 128 random 7x7x3 neighbourhoods, centres uniform in [3, W-3) x [3, H-3).
  3. Per level and set, normalise by the per-colour-channel mean and population std; flatten to 147-d.
  4. Per level, 4 repeats of 128 random unit directions: project, sort, mean absolute difference.
  5. Multiply by 1e3; report every level and their mean.
Images are streamed: only the descriptors (128 per image per level) are kept.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from fastprogan.metrics._filters import binomial_kernel, separable_filter
from fastprogan.metrics.convert import tile_rgb

MIN_RESOLUTION = 16


def num_pyramid_levels(height: int, width: int, min_resolution: int = MIN_RESOLUTION) -> int:
    """Number of pyramid levels from (height, width) down to ``min_resolution`` (step 1): 4 at 128, 7 at 1024."""
    if min(height, width) < min_resolution:
        raise ValueError(f"images must be at least {min_resolution}x{min_resolution}, got {height}x{width}")
    levels = 1
    while min(height, width) // 2 >= min_resolution:
        if height % 2 or width % 2:
            raise ValueError(f"cannot halve a {height}x{width} level exactly; use power-of-two sizes")
        height, width = height // 2, width // 2
        levels += 1
    return levels


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur with the 5x5 binomial kernel (mirror borders) and keep every second pixel (step 1).

    x: float [N, C, H, W] -> [N, C, ceil(H/2), ceil(W/2)]; matches cv2.pyrDown with BORDER_REFLECT_101.
    """
    return separable_filter(x, binomial_kernel(device=x.device), border="reflect")[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    """Upsample by zero insertion and blur with the binomial kernel times 4 (step 1).

    x: float [N, C, H, W] -> [N, C, 2H, 2W]. The factor 4 (2 per axis) restores the mean that the
    zeros removed. Mirror borders are applied on the zero-inserted grid, so the last row/column differ
    from cv2.pyrUp, which mirrors in the source grid; the interior is identical.
    """
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)  # [N, C, 2H, 2W]
    up[:, :, ::2, ::2] = x
    return separable_filter(up, binomial_kernel(scale=2.0, device=x.device), border="reflect")


def laplacian_pyramid(
    images: torch.Tensor, num_levels: int | None = None, min_resolution: int = MIN_RESOLUTION
) -> list[torch.Tensor]:
    """Laplacian pyramid of ``images`` [N, C, H, W] (uint8 or float on 0..255), finest level first (step 1).

    Every level but the last is the difference between a level and the upsampled next coarser one;
    the last is the low-pass image itself (16x16 by default), so ``sum(pyr_up^k(level_k))`` gives the
    input back. Computed in float32.
    """
    x = images.float()  # [N, C, H, W] on 0..255
    if num_levels is None:
        num_levels = num_pyramid_levels(x.shape[2], x.shape[3], min_resolution)
    pyramid = [x]
    for _ in range(1, num_levels):
        coarse = pyr_down(pyramid[-1])
        pyramid[-1] = pyramid[-1] - pyr_up(coarse)
        pyramid.append(coarse)
    return pyramid


def extract_descriptors(
    level: torch.Tensor, nhoods_per_image: int, nhood_size: int, generator: torch.Generator
) -> torch.Tensor:
    """Random square neighbourhoods of one pyramid level, flattened channel-major (step 2).

    level: float [N, C, H, W] -> [N * nhoods_per_image, C * nhood_size**2]. Centres are drawn uniform in
    [r, W-r) x [r, H-r), r = nhood_size // 2, from ``generator`` (a CPU generator, so the draw is the
    same on every device); the gather is one vectorised ``torch.take``.
    """
    n, c, h, w = level.shape
    r = nhood_size // 2
    if min(h, w) < nhood_size:
        raise ValueError(f"level {h}x{w} is smaller than a {nhood_size}x{nhood_size} neighbourhood")
    cx = torch.randint(r, w - r, (n, nhoods_per_image, 1, 1, 1), generator=generator)
    cy = torch.randint(r, h - r, (n, nhoods_per_image, 1, 1, 1), generator=generator)
    offsets = torch.arange(-r, r + 1)
    img = torch.arange(n).view(n, 1, 1, 1, 1)
    chan = torch.arange(c).view(1, 1, c, 1, 1)
    ys = cy + offsets.view(1, 1, 1, -1, 1)  # [N, P, 1, S, 1]
    xs = cx + offsets.view(1, 1, 1, 1, -1)  # [N, P, 1, 1, S]
    flat = ((img * c + chan) * h + ys) * w + xs  # [N, P, C, S, S] indices into level.flatten()
    desc = torch.take(level, flat.to(level.device))  # [N, P, C, S, S]
    return desc.reshape(n * nhoods_per_image, c * nhood_size * nhood_size)


def normalize_descriptors(desc: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """Subtract the per-colour-channel mean and divide by the population std over the whole set (step 3).

    desc: [M, C * S * S] float, modified in place and returned.
    """
    view = desc.view(desc.shape[0], channels, -1)  # [M, C, S*S]
    # Statistics in float64: the set holds millions of values, and float32 sums drift.
    var, mean = torch.var_mean(view.double(), dim=(0, 2), correction=0, keepdim=True)
    view.sub_(mean.float()).div_(var.sqrt().float())
    return desc


def random_directions(dim: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` directions N(0, 1) in ``dim`` dimensions, each scaled to unit length (step 4): [dim, count]."""
    dirs = torch.randn(dim, count, generator=generator)
    return dirs / dirs.norm(dim=0, keepdim=True)


def sliced_w1(a: torch.Tensor, b: torch.Tensor, dirs: torch.Tensor) -> float:
    """Mean over directions of the 1-D Wasserstein-1 distance between projections of a and b (step 4).

    a, b: [M, D] with the same M; dirs: [D, K]. Sorted projections are compared element-wise, which is
    the exact W1 between two equal-size empirical distributions. On CPU the row sorts run in numpy
    (its vectorised sort is 2-3x faster than torch's) across a thread pool; on CUDA torch.sort is used.
    """
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"SWD needs equally many descriptors in both sets, got {a.shape[0]} and {b.shape[0]}"
        )
    dirs_t = dirs.t().to(device=a.device, dtype=a.dtype).contiguous()  # [K, D]
    # [K, M]: one contiguous row per direction so each sort runs over contiguous memory.
    pa = dirs_t @ a.t()
    pb = dirs_t @ b.t()
    if pa.device.type != "cpu":
        sa = torch.sort(pa, dim=1).values
        sb = torch.sort(pb, dim=1).values
        return float((sa - sb).abs().double().mean())
    na, nb = pa.numpy(), pb.numpy()

    def chunk_sum(rows: slice) -> float:
        # In-place sorts on our own temporaries; numpy releases the GIL, so the threads run in parallel.
        ra, rb = na[rows], nb[rows]
        ra.sort(axis=1)
        rb.sort(axis=1)
        return float(np.abs(ra - rb).sum(dtype=np.float64))

    k = na.shape[0]
    step = max(1, math.ceil(k / (4 * max(1, torch.get_num_threads()))))
    chunks = [slice(i, min(i + step, k)) for i in range(0, k, step)]
    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        total = sum(pool.map(chunk_sum, chunks))
    return total / (na.shape[0] * na.shape[1])


def _stable_seed(*parts: object) -> int:
    """A 63-bit seed from the parts, stable across processes (unlike hash())."""
    return zlib.crc32(repr(parts).encode()) * 2654435761 % (2**63 - 1)


class SlicedWassersteinDistance:
    """Streaming SWD accumulator (steps 1-5).

    Feed uint8 image batches [B, C, H, W] (C = 1 is tiled to RGB) with :meth:`add_reals`, :meth:`add_fakes`
    or :meth:`add` under any set name (e.g. a second draw of reals for the real-vs-real floor), then
    call :meth:`compute`. Each set draws its neighbourhood centres from its own generator seeded from
    ``(seed, name)``, and the directions of a level depend only on ``(seed, level)``, so results do not
    depend on the order in which sets are fed or compared.
    """

    def __init__(
        self,
        nhood_size: int = 7,
        nhoods_per_image: int = 128,
        dir_repeats: int = 4,
        dirs_per_repeat: int = 128,
        min_resolution: int = MIN_RESOLUTION,
        seed: int = 0,
        device: torch.device | str | None = None,
        storage_device: torch.device | str | None = None,
    ) -> None:
        self.nhood_size = nhood_size
        self.nhoods_per_image = nhoods_per_image
        self.dir_repeats = dir_repeats
        self.dirs_per_repeat = dirs_per_repeat
        self.min_resolution = min_resolution
        self.seed = seed
        self.device = torch.device(device) if device is not None else None
        self.storage_device = torch.device(storage_device) if storage_device is not None else None
        self.resolutions: list[tuple[int, int]] | None = None  # (H, W) per level, set by the first batch
        self._desc: dict[str, list[list[torch.Tensor]]] = {}  # name -> level -> chunks [M, 147]
        self._generators: dict[str, torch.Generator] = {}
        self._counts: dict[str, int] = {}

    def add_reals(self, images: torch.Tensor) -> None:
        """Add a batch of real uint8 images [B, C, H, W] to the set ``"reals"``."""
        self.add("reals", images)

    def add_fakes(self, images: torch.Tensor) -> None:
        """Add a batch of generated uint8 images [B, C, H, W] to the set ``"fakes"``."""
        self.add("fakes", images)

    def add(self, name: str, images: torch.Tensor) -> None:
        """Add a uint8 batch [B, C, H, W] to set ``name``: pyramid and descriptors only (steps 1-2)."""
        if images.dtype != torch.uint8:
            raise TypeError(f"SWD takes uint8 images (use to_uint8), got {images.dtype}")
        images = tile_rgb(images)
        if self.device is not None:
            images = images.to(self.device)
        h, w = images.shape[2], images.shape[3]
        pyramid = laplacian_pyramid(images, min_resolution=self.min_resolution)
        shapes = [(lv.shape[2], lv.shape[3]) for lv in pyramid]
        if self.resolutions is None:
            self.resolutions = shapes
        elif shapes != self.resolutions:
            raise ValueError(f"all images must share one size; got {h}x{w}, expected {self.resolutions[0]}")
        if name not in self._desc:
            self._desc[name] = [[] for _ in pyramid]
            self._generators[name] = torch.Generator().manual_seed(
                _stable_seed("swd-nhoods", self.seed, name)
            )
            self._counts[name] = 0
        gen = self._generators[name]
        for chunks, level in zip(self._desc[name], pyramid):
            desc = extract_descriptors(level, self.nhoods_per_image, self.nhood_size, gen)
            chunks.append(desc.to(self.storage_device) if self.storage_device is not None else desc)
        self._counts[name] += images.shape[0]

    def count(self, name: str) -> int:
        """Number of images added to set ``name`` so far."""
        return self._counts.get(name, 0)

    def level_names(self) -> list[str]:
        """Keys of the per-level results: the level's resolution, e.g. ["128", "64", "32", "16"]."""
        if self.resolutions is None:
            return []
        return [str(h) if h == w else f"{h}x{w}" for h, w in self.resolutions]

    def _normalized(self, name: str, level: int) -> torch.Tensor:
        chunks = self._desc[name][level]
        desc = torch.cat(chunks) if len(chunks) > 1 else chunks[0].clone()  # [M, 147], a private copy
        return normalize_descriptors(desc)

    def compute(self, a: str = "reals", b: str = "fakes") -> dict[str, float]:
        """SWD x 1e3 between sets ``a`` and ``b`` per level, plus ``"mean"`` over levels (steps 3-5).

        Returns e.g. ``{"128": .., "64": .., "32": .., "16": .., "mean": ..}``; the finest level first.
        """
        for name in (a, b):
            if self.count(name) == 0:
                raise ValueError(f"no images were added to set {name!r}")
        if self.count(a) != self.count(b):
            raise ValueError(
                f"sets {a!r} and {b!r} hold {self.count(a)} and {self.count(b)} images; SWD needs equal sizes"
            )
        result: dict[str, float] = {}
        for index, key in enumerate(self.level_names()):
            da = self._normalized(a, index)
            db = self._normalized(b, index)
            gen = torch.Generator().manual_seed(_stable_seed("swd-dirs", self.seed, index))
            dists = [
                sliced_w1(da, db, random_directions(da.shape[1], self.dirs_per_repeat, gen))
                for _ in range(self.dir_repeats)
            ]
            result[key] = float(np.mean(dists)) * 1e3
            del da, db
        result["mean"] = float(np.mean([result[k] for k in self.level_names()]))
        return result


def sliced_wasserstein_distance(
    reals: torch.Tensor | Iterable[torch.Tensor],
    fakes: torch.Tensor | Iterable[torch.Tensor],
    seed: int = 0,
    device: torch.device | str | None = None,
    **options: int,
) -> dict[str, float]:
    """SWD x 1e3 per level and mean (steps 1-5) between two uint8 tensors [N, C, H, W] or iterables of batches.

    ``options`` go to :class:`SlicedWassersteinDistance` (nhood_size, nhoods_per_image, dir_repeats, ...).
    """
    swd = SlicedWassersteinDistance(seed=seed, device=device, **options)
    for name, source in (("reals", reals), ("fakes", fakes)):
        batches = [source] if isinstance(source, torch.Tensor) else source
        for batch in batches:
            swd.add(name, batch)
    return swd.compute("reals", "fakes")
