"""One evaluation loop shared by the trainer and the ``fastprogan metrics`` command.

Reals are streamed once into every metric that needs them, then fakes are generated in batches and
streamed likewise: no metric ever holds the images, only its own statistics (SWD descriptors,
Inception feature moments, a running MS-SSIM sum).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from fastprogan.metrics.convert import to_uint8
from fastprogan.metrics.fid import (
    SKIP_MESSAGE,
    FIDSkippedWarning,
    GaussianFit,
    InceptionFeatures,
    frechet_distance,
    load_inception,
)
from fastprogan.metrics.ms_ssim import ms_ssim
from fastprogan.metrics.swd import SlicedWassersteinDistance

GenerateFn = Callable[[int, torch.Generator], torch.Tensor]
KNOWN_METRICS = ("swd", "msssim", "fid")


def evaluate(
    generate_fn: GenerateFn,
    reals_iter: Iterable[torch.Tensor | np.ndarray],
    metrics: Sequence[str] = KNOWN_METRICS,
    num_images: int = 16384,
    num_pairs: int = 10000,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str | None = None,
    inception: str | torch.nn.Module | None = None,
    swd_floor: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the paper's evaluation protocol and return a JSON-ready dict.

    generate_fn(n, generator) -> float images in [-1, 1], [n, C, H, W]; ``generator`` is a seeded CPU
    torch.Generator (draw latents on CPU and move them, so results do not depend on the device).
    reals_iter yields uint8 batches [B, C, H, W] (torch or numpy), in an order that is already random.

    * ``swd``: ``num_images`` reals vs as many fakes (SWD steps 1-5); if ``swd_floor`` and the
      iterator holds ``2 * num_images`` reals, a second draw gives the real-vs-real floor.
    * ``msssim``: mean MS-SSIM over ``num_pairs`` pairs of generated images (diversity).
    * ``fid``: Frechet distance between Inception features of ``num_images`` reals and fakes; skipped,
      with ``fid_skipped`` set, when no Inception weights are available.

    If the iterator runs out before ``num_images`` reals, every real-vs-fake metric uses the number it
    got (recorded as ``num_images``) and a note says so.
    """
    metrics = tuple(m.lower() for m in metrics)
    unknown = sorted(set(metrics) - set(KNOWN_METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(KNOWN_METRICS)}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    result: dict[str, Any] = {"metrics": list(metrics), "seed": seed, "notes": []}

    swd = SlicedWassersteinDistance(seed=seed, device=dev) if "swd" in metrics else None
    extractor: InceptionFeatures | None = None
    if "fid" in metrics:
        extractor, skip = _extractor(inception, dev)
        if extractor is None:
            result["fid"] = None
            result["fid_skipped"] = skip
            warnings.warn(skip, FIDSkippedWarning, stacklevel=2)
    fit_real = GaussianFit() if extractor is not None else None
    fit_fake = GaussianFit() if extractor is not None else None

    # Reals: the first num_images feed SWD and FID; the next num_images the SWD floor.
    n_real = 0
    n_floor = 0
    want_floor = swd is not None and swd_floor
    if swd is not None or extractor is not None:
        for batch in _progress(reals_iter, progress, "reals"):
            batch = torch.as_tensor(batch).to(dev)  # [B, C, H, W] uint8
            if batch.dtype != torch.uint8:
                raise TypeError(f"reals must be uint8, got {batch.dtype}")
            take = min(batch.shape[0], num_images - n_real)
            if take > 0:
                if swd is not None:
                    swd.add_reals(batch[:take])
                if extractor is not None:
                    fit_real.add(extractor(batch[:take]))
                n_real += take
            rest = batch[take:]
            if want_floor and rest.shape[0] > 0 and n_floor < num_images:
                rest = rest[: num_images - n_floor]
                swd.add("reals_floor", rest)
                n_floor += rest.shape[0]
            if n_real >= num_images and (not want_floor or n_floor >= num_images):
                break
        if n_real == 0:
            raise ValueError("reals_iter yielded no images")
        if n_real < num_images:
            result["notes"].append(f"only {n_real} real images available; real-vs-fake metrics use {n_real}")
    n_fake = n_real if (swd is not None or extractor is not None) else 0
    result["num_images"] = n_fake

    # Fakes: one generated stream shared by SWD, FID and the MS-SSIM pairs.
    n_pair_images = 2 * num_pairs if "msssim" in metrics else 0
    generator = torch.Generator().manual_seed(seed)
    fed_swd = fed_fid = 0
    pair_images = 0
    msssim_sum = 0.0
    pending: torch.Tensor | None = None  # an odd image left over for the next MS-SSIM pair
    total = max(n_fake, n_pair_images)
    produced = 0
    with torch.no_grad():
        while produced < total:
            n = min(batch_size, total - produced)
            fakes = to_uint8(generate_fn(n, generator).to(dev))  # [n, C, H, W] uint8
            produced += n
            if swd is not None and fed_swd < n_fake:
                part = fakes[: n_fake - fed_swd]
                swd.add_fakes(part)
                fed_swd += part.shape[0]
            if extractor is not None and fed_fid < n_fake:
                part = fakes[: n_fake - fed_fid]
                fit_fake.add(extractor(part))
                fed_fid += part.shape[0]
            if pair_images < n_pair_images:
                pool = fakes if pending is None else torch.cat([pending, fakes])
                usable = min(pool.shape[0] // 2 * 2, n_pair_images - pair_images)
                pairs = pool[:usable]
                if usable:
                    msssim_sum += float(ms_ssim(pairs[0::2], pairs[1::2]).double().sum())
                    pair_images += usable
                pending = pool[usable:] if pool.shape[0] > usable else None

    if swd is not None:
        result["swd"] = swd.compute("reals", "fakes")
        if want_floor:
            if n_floor == num_images and n_real == num_images:
                result["swd_real_floor"] = swd.compute("reals", "reals_floor")
            else:
                result["notes"].append(
                    f"SWD real-vs-real floor skipped: needs {2 * num_images} reals, got {n_real + n_floor}"
                )
    if "msssim" in metrics:
        result["msssim"] = msssim_sum / max(1, pair_images // 2)
        result["msssim_pairs"] = pair_images // 2
    if fit_real is not None and fit_fake is not None:
        result["fid"] = frechet_distance(*fit_real.mean_cov(), *fit_fake.mean_cov())
    return result


def _extractor(
    inception: str | torch.nn.Module | None, device: torch.device
) -> tuple[InceptionFeatures | None, str]:
    """The FID extractor, or (None, reason) when no weights can be found."""
    if isinstance(inception, InceptionFeatures):
        return inception.to(device), ""
    if isinstance(inception, torch.nn.Module):
        return InceptionFeatures(inception.to(device), takes_uint8=False, return_features_kw=False), ""
    try:
        return load_inception(inception, device=device), ""
    except FileNotFoundError as exc:
        return None, SKIP_MESSAGE if inception is None else f"FID skipped: {exc}"


def _progress(iterable: Iterable[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="batch")
