"""Frechet Inception Distance: Gaussian fits of 2048-d Inception pool features, compared in float64.

The feature extractor is pluggable and is never downloaded:

* a TorchScript file, e.g. the widely used ``inception-2015-12-05.pt`` port of the TF graph, called
  as ``module(uint8 [N, 3, H, W], return_features=True)`` (plain ``module(x)`` if that keyword is not
  accepted); it resizes to 299x299 itself;
* a state_dict (``.pth``/``.pt`` that is not TorchScript) together with ``architecture``, a callable
  returning the ``nn.Module`` to load it into; that module receives float32 [N, 3, H, W] on 0..255
  and must return [N, 2048] (or [N, 2048, 1, 1]); it does its own resizing and normalisation;
* an installed ``pytorch_fid`` whose FID weights already sit in the torch hub cache (found by
  :func:`find_inception`; hub downloads are switched off before it is built).

Without any of these, callers report "FID skipped: no Inception weights; pass --inception PATH".
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fastprogan.metrics.convert import tile_rgb

FEATURE_DIM = 2048
SKIP_MESSAGE = "FID skipped: no Inception weights; pass --inception PATH"


class FIDSkippedWarning(UserWarning):
    """Warned by ``evaluate()`` when FID is requested but no Inception weights are found.

    Its own class so that a caller which reports the skip itself (the ``metrics`` command prints it in
    the table's FID row) can silence exactly this warning.
    """


TORCHSCRIPT_NAME = "inception-2015-12-05.pt"
PYTORCH_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64 (FID's distance between Gaussian fits).

    With scipy, (S1 S2)^(1/2) is scipy.linalg.sqrtm (a tiny diagonal offset is added if the product
    is singular, and a negligible imaginary part is dropped). Without scipy, the trace is computed as
    sum(sqrt(eig(S1^(1/2) S2 S1^(1/2)))): that matrix is similar to S1 S2 and symmetric PSD, so
    a symmetric eigen-decomposition gives the same trace exactly in exact arithmetic.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_product(s1, s2))


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2."""
    if importlib.util.find_spec("scipy") is not None:
        return _trace_sqrt_product_scipy(s1, s2)
    return _trace_sqrt_product_eigh(s1, s2)


def _trace_sqrt_product_scipy(s1: np.ndarray, s2: np.ndarray) -> float:
    from scipy import linalg

    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # Singular product (e.g. fewer samples than dimensions): regularise both factors slightly.
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # round-off leaves a tiny imaginary part on PSD inputs
    return float(np.trace(covmean))


def _trace_sqrt_product_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    vals, vecs = np.linalg.eigh(s1)
    root1 = (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T  # S1^(1/2)
    inner = root1 @ s2 @ root1
    inner = (inner + inner.T) / 2.0  # symmetrise away round-off
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(inner), 0.0, None)).sum())


class GaussianFit:
    """Streaming mean and covariance (unbiased, like numpy.cov) of feature rows, accumulated in float64."""

    def __init__(self) -> None:
        self.count = 0
        self._sum: torch.Tensor | None = None  # [D], sized by the first batch
        self._outer: torch.Tensor | None = None  # [D, D]

    def add(self, features: torch.Tensor) -> None:
        """Accumulate features [B, D] (D = 2048 for Inception pool features)."""
        f = features.detach().to("cpu", torch.float64)
        if self._sum is None:
            self._sum = torch.zeros(f.shape[1], dtype=torch.float64)
            self._outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        self.count += f.shape[0]
        self._sum += f.sum(dim=0)
        self._outer += f.t() @ f

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu [D], sigma [D, D]) as float64 numpy arrays."""
        if self.count < 2:
            raise ValueError("need at least two feature vectors for a covariance")
        mu = self._sum / self.count
        cov = (self._outer - self.count * torch.outer(mu, mu)) / (self.count - 1)
        return mu.numpy(), cov.numpy()


class InceptionFeatures(torch.nn.Module):
    """Wraps a feature extractor so that uint8 [N, C, H, W] (C = 1 or 3) maps to float64-ready [N, 2048]."""

    def __init__(self, module: torch.nn.Module, takes_uint8: bool, return_features_kw: bool) -> None:
        super().__init__()
        self.module = module.eval()
        self.takes_uint8 = takes_uint8
        self.return_features_kw = return_features_kw

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = tile_rgb(images)  # [N, 3, H, W] uint8
        if not self.takes_uint8:
            x = x.float()
        out = self.module(x, return_features=True) if self.return_features_kw else self.module(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.reshape(out.shape[0], -1).float()  # [N, 2048]


def load_inception(
    path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    architecture: Callable[[], torch.nn.Module] | None = None,
) -> InceptionFeatures:
    """Load the FID feature extractor from ``path`` (TorchScript, or a state_dict with ``architecture``).

    With ``path=None`` an already-downloaded extractor is searched with :func:`find_inception`.
    Raises FileNotFoundError when nothing usable exists; nothing is ever downloaded.
    """
    if path is None:
        found = find_inception()
        if found is None:
            raise FileNotFoundError(SKIP_MESSAGE)
        if found == "pytorch_fid":
            return _load_pytorch_fid(device)
        path = found
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights not found: {path}")
    try:
        with warnings.catch_warnings():
            # torch.jit is deprecated upstream, but TorchScript is the format the Inception port ships in.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except RuntimeError:  # not a TorchScript archive: treat it as a state_dict below
        module = None
    if module is not None:
        return InceptionFeatures(
            module, takes_uint8=True, return_features_kw=_accepts_return_features(module)
        )
    if architecture is None:
        raise ValueError(f"{path} is not TorchScript; pass architecture=... to load it as a state_dict")
    net = architecture()
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return InceptionFeatures(net.to(device), takes_uint8=False, return_features_kw=False)


def _accepts_return_features(module: torch.nn.Module) -> bool:
    try:
        schema = str(module.forward.schema)  # TorchScript methods expose their signature
    except AttributeError:
        return False
    return "return_features" in schema


def find_inception() -> str | None:
    """An extractor already on disk: $FASTPROGAN_INCEPTION, ``inception-2015-12-05.pt`` in the torch hub
    or ~/.cache, or "pytorch_fid" when that package is installed with its weights cached. Else None."""
    env = os.environ.get("FASTPROGAN_INCEPTION")
    if env and Path(env).is_file():
        return env
    hub = Path(torch.hub.get_dir())
    for candidate in (
        hub / TORCHSCRIPT_NAME,
        hub / "checkpoints" / TORCHSCRIPT_NAME,
        Path.home() / ".cache" / TORCHSCRIPT_NAME,
    ):
        if candidate.is_file():
            return str(candidate)
    if (
        importlib.util.find_spec("pytorch_fid") is not None
        and (hub / "checkpoints" / PYTORCH_FID_WEIGHTS).is_file()
    ):
        return "pytorch_fid"
    return None


def _load_pytorch_fid(device: torch.device | str) -> InceptionFeatures:
    # Its constructor fetches weights through torch.hub.load_state_dict_from_url, which returns the
    # cached file without touching the network when it exists; find_inception checked that it does.
    from pytorch_fid.inception import InceptionV3

    net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]], resize_input=True, normalize_input=True)

    class _Scaled(torch.nn.Module):
        """pytorch_fid expects floats in [0, 1] and returns a list of [N, 2048, 1, 1]."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x / 255.0)[0]

    return InceptionFeatures(_Scaled(net).to(device), takes_uint8=False, return_features_kw=False)
