"""Sliced Wasserstein distance between Laplacian-pyramid patch statistics (Karras et al. 2018, App. D).

Protocol, as numbered in the docstrings below:
  1. Laplacian pyramid of each uint8 RGB image in float32 on 0..255, from full resolution down to 16x16.
  2. Per image and level, 128 random 7x7x3 neighbourhoods, centres uniform in [3, W-3) x [3, H-3),
     drawn independently for each image set.
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
    same on every device); x is drawn before y. The gather is one advanced-indexing read from an
    unfold view, so no per-pixel index arithmetic is materialised.
    """
    n, c, h, w = level.shape
    r = nhood_size // 2
    if min(h, w) < nhood_size:
        raise ValueError(f"level {h}x{w} is smaller than a {nhood_size}x{nhood_size} neighbourhood")
    cx = torch.randint(r, w - r, (n, nhoods_per_image), generator=generator)  # [N, P]
    cy = torch.randint(r, h - r, (n, nhoods_per_image), generator=generator)  # [N, P]
    # [N, C, H-2r, W-2r, S, S]: every window as a view; a contiguous level makes the gather cache-friendly.
    windows = level.contiguous().unfold(2, nhood_size, 1).unfold(3, nhood_size, 1)
    img = torch.arange(n).view(n, 1)
    idx = [t.to(level.device) for t in (img, cy - r, cx - r)]
    desc = windows[idx[0], :, idx[1], idx[2]]  # [N, P, C, S, S]: advanced dims first, then the sliced C
    return desc.reshape(n * nhoods_per_image, c * nhood_size * nhood_size)


def random_directions(dim: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` directions N(0, 1) in ``dim`` dimensions, each scaled to unit length (step 4): [dim, count]."""
    dirs = torch.randn(dim, count, generator=generator)
    return dirs / dirs.norm(dim=0, keepdim=True)


def sliced_w1(a: torch.Tensor, b: torch.Tensor, dirs: torch.Tensor) -> float:
    """Mean over directions of the 1-D Wasserstein-1 distance between projections of a and b (step 4).

    a, b: [M, D] (already normalised) with the same M; dirs: [D, K].
    """
    dirs_t = dirs.t().to(device=a.device, dtype=a.dtype).contiguous()  # [K, D]
    return _mean_abs_sorted_diff(
        dirs_t @ a.t(), dirs_t @ b.t(), torch.zeros(dirs.shape[1], dtype=torch.float64)
    )


def _mean_abs_sorted_diff(pa: torch.Tensor, pb: torch.Tensor, delta: torch.Tensor) -> float:
    """mean |sort(pa[k]) - sort(pb[k]) - delta[k]| over rows k and positions (step 4); sorts in place.

    pa, pb: [K, M] projections (one contiguous row per direction, so every sort runs over contiguous
    memory); delta: [K] a constant per direction that normalisation adds to pa - pb. Comparing sorted
    values element-wise is the exact W1 between two equal-size empirical distributions. On CPU the
    row sorts run in numpy (its vectorised sort measured 2-4x faster than torch's) across a thread
    pool; on CUDA torch.sort is used.
    """
    if pa.shape != pb.shape:
        raise ValueError(
            f"SWD needs equally many descriptors in both sets, got {pa.shape[1]} and {pb.shape[1]}"
        )
    if pa.device.type != "cpu":
        sa = torch.sort(pa, dim=1).values
        sb = torch.sort(pb, dim=1).values
        shift = delta.to(device=pa.device, dtype=pa.dtype).unsqueeze(1)
        return float((sa - sb - shift).abs().double().mean())
    na, nb = pa.numpy(), pb.numpy()
    nd = delta.to(torch.float32).numpy()[:, None]  # [K, 1]
    k, m = na.shape
    workers = max(1, torch.get_num_threads())

    def chunk_sum(rows: slice) -> float:
        ra, rb = na[rows], nb[rows]
        ra.sort(axis=1)
        rb.sort(axis=1)
        ra -= rb
        ra -= nd[rows]
        return float(np.abs(ra, out=ra).sum(dtype=np.float64))

    if na.size < 2**20 or workers == 1:
        # Small sets: thread start-up would cost more than it saves.
        return chunk_sum(slice(0, k)) / (k * m)
    step = max(1, math.ceil(k / (4 * workers)))
    chunks = [slice(i, min(i + step, k)) for i in range(0, k, step)]
    # numpy releases the GIL while sorting, so the threads run in parallel.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(chunk_sum, chunks)) / (k * m)


def _stable_seed(*parts: object) -> int:
    """A 63-bit seed from the parts, stable across processes (unlike hash())."""
    return zlib.crc32(repr(parts).encode()) * 2654435761 % (2**63 - 1)


def nhood_seed(seed: int, name: str) -> int:
    """Seed of set ``name``'s neighbourhood centres (step 2): one independent stream per set."""
    return _stable_seed("swd-nhoods", seed, name)


class _LevelStore:
    """Descriptors of one set at one pyramid level plus the running moments step 3 needs.

    Descriptors are stored minus a per-channel centre (the first batch's mean) so that projections
    of the low-pass level, whose raw values sit around 128, do not lose float32 precision. They are
    copied into large preallocated blocks rather than kept as one small tensor per batch: small
    tensors land on the C heap, whose freed memory is not returned to the OS, so consolidating
    thousands of them would leave the process holding the descriptors twice.
    """

    MAX_BLOCK_ROWS = 2**17  # 77 MB per block of 147-d float32 rows

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self._blocks: list[torch.Tensor] = []  # [capacity_i, C * S * S]
        self._fill = 0  # rows used in the last block
        self.rows = 0
        self.centre: torch.Tensor | None = None  # [C] float32
        self._sum = torch.zeros(channels, dtype=torch.float64)
        self._sum_sq = torch.zeros(channels, dtype=torch.float64)

    def add(self, desc: torch.Tensor, storage: torch.device | None) -> None:
        view = desc.view(desc.shape[0], self.channels, -1)  # [M, C, S*S]
        if self.centre is None:
            self.centre = view.mean(dim=(0, 2))
        view = view.sub_(self.centre.view(1, -1, 1))  # desc is a fresh tensor: shift it in place
        # Per-chunk sums in float32 (torch reduces pairwise, ~1e-7 relative), accumulated in float64
        # across chunks: the whole set holds ~10^8 values per channel.
        self._sum += view.sum(dim=(0, 2)).double().cpu()
        self._sum_sq += (view * view).sum(dim=(0, 2)).double().cpu()
        flat = desc.view(desc.shape[0], -1)  # [M, C * S * S]
        written = 0
        while written < flat.shape[0]:
            if not self._blocks or self._fill == self._blocks[-1].shape[0]:
                # Blocks grow geometrically so small evaluations stay small.
                last = self._blocks[-1].shape[0] if self._blocks else flat.shape[0] * 4
                rows = min(self.MAX_BLOCK_ROWS, max(2 * last, flat.shape[0]))
                self._blocks.append(flat.new_empty(rows, flat.shape[1], device=storage or flat.device))
                self._fill = 0
            block = self._blocks[-1]
            n = min(flat.shape[0] - written, block.shape[0] - self._fill)
            block[self._fill : self._fill + n].copy_(flat[written : written + n])
            self._fill += n
            written += n
        self.rows += flat.shape[0]

    @property
    def dim(self) -> int:
        return self._blocks[0].shape[1]

    def descriptors(self) -> torch.Tensor:
        """All descriptors [M, C * S * S]; concatenated once into a single block and kept that way."""
        if len(self._blocks) > 1:
            parts = [*self._blocks[:-1], self._blocks[-1][: self._fill]]
            self._blocks = [torch.cat(parts)]
            del parts
            self._fill = self.rows
        return self._blocks[0][: self._fill]

    def project(self, dirs: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Projections of the normalised descriptors (step 3 folded into step 4): ([K, M], offset [K]).

        (x - mean_c) / std_c . w  =  x . (w / std_c)  -  sum_c (mean_c / std_c) sum_{i in c} w_i, so the
        per-channel scale goes into the directions and the mean becomes one constant per direction,
        returned separately (float64) instead of subtracting it from millions of values.
        """
        values = self.rows * (self.dim // self.channels)  # values per channel
        mean = self._sum / values  # [C] float64, relative to the centre
        std = (self._sum_sq / values - mean * mean).clamp_min(0).sqrt()  # population std
        # A constant channel (e.g. flat generated images) normalises to 0 whatever the divisor.
        std = torch.where(std > 0, std, torch.ones_like(std))
        per_dim = dirs.shape[0] // self.channels
        inv_std = (1.0 / std).repeat_interleave(per_dim)  # [D]
        dirs64 = dirs.double()
        offset = (mean / std).repeat_interleave(per_dim) @ dirs64  # [K]
        scaled = (dirs64 * inv_std[:, None]).t().to(device=device, dtype=torch.float32).contiguous()  # [K, D]
        x = self.descriptors().to(device)
        return scaled @ x.t(), offset


class SlicedWassersteinDistance:
    """Streaming SWD accumulator (steps 1-5).

    Feed uint8 image batches [B, C, H, W] (C = 1 is tiled to RGB) with :meth:`add_reals`, :meth:`add_fakes`
    or :meth:`add` under any set name (e.g. a second draw of reals for the real-vs-real floor), then
    call :meth:`compute`. Each set draws its neighbourhood centres from its own generator seeded by
    ``(seed, set name)``, independently of every other set as the paper's protocol does: replaying
    one sequence of centres for reals and fakes would compare the same pixels of images that
    correlate with the reals (reconstructions, blurred reals) and bias SWD low (blurred reals at
    64 px: -8% / -49% / -79% at 64 / 32 / 16 px, docs/metrics.md). A set compared with itself
    (``compute("reals", "reals")``) reuses its own descriptors and gives exactly 0; two different
    draws of reals (the real-vs-real floor) use independent positions like any other pair. The directions of a level depend only on
    ``(seed, level)``. Results do not depend on the order in which sets are fed or compared. Only
    descriptors and per-channel moments are kept: 128 x 147 float32 per image and level (16,384
    images at 128px: ~4.9 GB per set).
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
        chunk_size: int = 64,
    ) -> None:
        self.nhood_size = nhood_size
        self.nhoods_per_image = nhoods_per_image
        self.dir_repeats = dir_repeats
        self.dirs_per_repeat = dirs_per_repeat
        self.min_resolution = min_resolution
        self.seed = seed
        self.device = torch.device(device) if device is not None else None
        self.storage_device = torch.device(storage_device) if storage_device is not None else None
        # Pyramids of a few dozen images stay in cache; on CPU larger batches run ~3x slower per image.
        self.chunk_size = chunk_size
        self.resolutions: list[tuple[int, int]] | None = None  # (H, W) per level, set by the first batch
        self._levels: dict[str, list[_LevelStore]] = {}
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
        for start in range(0, images.shape[0], self.chunk_size):
            self._add_chunk(name, images[start : start + self.chunk_size])

    def _add_chunk(self, name: str, images: torch.Tensor) -> None:
        if self.device is not None:
            images = images.to(self.device)
        h, w = images.shape[2], images.shape[3]
        pyramid = laplacian_pyramid(images, min_resolution=self.min_resolution)
        shapes = [(lv.shape[2], lv.shape[3]) for lv in pyramid]
        if self.resolutions is None:
            self.resolutions = shapes
        elif shapes != self.resolutions:
            raise ValueError(f"all images must share one size; got {h}x{w}, expected {self.resolutions[0]}")
        if name not in self._levels:
            self._levels[name] = [_LevelStore(images.shape[1]) for _ in pyramid]
            # Independent positions per set (step 2): the set's name is part of its seed.
            self._generators[name] = torch.Generator().manual_seed(nhood_seed(self.seed, name))
            self._counts[name] = 0
        gen = self._generators[name]
        for store, level in zip(self._levels[name], pyramid):
            store.add(
                extract_descriptors(level, self.nhoods_per_image, self.nhood_size, gen), self.storage_device
            )
        self._counts[name] += images.shape[0]

    def count(self, name: str) -> int:
        """Number of images added to set ``name`` so far."""
        return self._counts.get(name, 0)

    def level_names(self) -> list[str]:
        """Keys of the per-level results: the level's resolution, e.g. ["128", "64", "32", "16"]."""
        if self.resolutions is None:
            return []
        return [str(h) if h == w else f"{h}x{w}" for h, w in self.resolutions]

    def compute(self, a: str = "reals", b: str = "fakes") -> dict[str, float]:
        """SWD x 1e3 between sets ``a`` and ``b`` per level, plus ``"mean"`` over levels (steps 3-5).

        Returns e.g. ``{"128": .., "64": .., "32": .., "16": .., "mean": ..}``; the finest level first.
        ``a == b`` compares a set with its own descriptors: exactly 0 at every level.
        """
        for name in (a, b):
            if self.count(name) == 0:
                raise ValueError(f"no images were added to set {name!r}")
        if self.count(a) != self.count(b):
            raise ValueError(
                f"sets {a!r} and {b!r} hold {self.count(a)} and {self.count(b)} images; SWD needs equal sizes"
            )
        if a == b:
            # The same descriptors on both sides: every sorted projection cancels (no need to sort).
            return {**{key: 0.0 for key in self.level_names()}, "mean": 0.0}
        device = self.device or torch.device("cpu")
        result: dict[str, float] = {}
        for index, key in enumerate(self.level_names()):
            store_a, store_b = self._levels[a][index], self._levels[b][index]
            gen = torch.Generator().manual_seed(_stable_seed("swd-dirs", self.seed, index))
            dists = []
            for _ in range(self.dir_repeats):
                dirs = random_directions(store_a.dim, self.dirs_per_repeat, gen)  # [147, 128]
                pa, offset_a = store_a.project(dirs, device)
                pb, offset_b = store_b.project(dirs, device)
                # Normalised projections are pa - offset_a and pb - offset_b.
                dists.append(_mean_abs_sorted_diff(pa, pb, offset_a - offset_b))
                del pa, pb
            result[key] = float(np.mean(dists)) * 1e3
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
