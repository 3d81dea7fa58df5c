"""Frechet distance against a direct scipy computation; Gaussian fit; extractor loading without downloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastprogan.metrics import (
    GaussianFit,
    InceptionFeatures,
    find_inception,
    frechet_distance,
    load_inception,
)
from fastprogan.metrics.fid import _trace_sqrt_product_eigh


def random_gaussians(dim: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4 * dim, dim)) @ rng.normal(size=(dim, dim))
    y = rng.normal(0.3, 1.0, size=(4 * dim, dim)) @ rng.normal(size=(dim, dim))
    return x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)


@pytest.mark.parametrize("dim", [2, 16, 64])
def test_frechet_distance_matches_direct_scipy(dim: int) -> None:
    linalg = pytest.importorskip("scipy.linalg", reason="scipy (test extra) is the sqrtm oracle")
    mu1, s1, mu2, s2 = random_gaussians(dim, seed=dim)
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("dim", [2, 16, 64])
def test_eigen_route_used_without_scipy_agrees(dim: int) -> None:
    linalg = pytest.importorskip("scipy.linalg", reason="scipy (test extra) is the sqrtm oracle")
    _, s1, _, s2 = random_gaussians(dim, seed=dim + 1)
    assert _trace_sqrt_product_eigh(s1, s2) == pytest.approx(np.trace(linalg.sqrtm(s1 @ s2).real), rel=1e-7)


def test_frechet_distance_of_identical_gaussians_is_zero_and_of_shift_is_squared_norm() -> None:
    mu, s, _, _ = random_gaussians(8, seed=0)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-6)
    shift = np.arange(8.0)
    assert frechet_distance(mu, s, mu + shift, s) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_gaussian_fit_streams_mean_and_unbiased_covariance() -> None:
    x = np.random.default_rng(0).normal(size=(300, 5)) * 10 + 100
    fit = GaussianFit()
    for chunk in np.array_split(x, 7):
        fit.add(torch.from_numpy(chunk).float())
    mu, cov = fit.mean_cov()
    xf = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu, xf.mean(0), rtol=1e-10)
    np.testing.assert_allclose(cov, np.cov(xf, rowvar=False), rtol=1e-8)


class TinyExtractor(torch.nn.Module):
    """Stands in for the Inception TorchScript port: uint8 [N, 3, H, W] -> [N, 2048]."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 2048)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = x.float().mean(dim=(2, 3)) / 255.0  # [N, 3]
        return self.proj(pooled)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_load_torchscript_with_return_features(tmp_path) -> None:
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(TinyExtractor()).save(str(path))
    features = load_inception(path)
    assert features.return_features_kw and features.takes_uint8
    gray = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    assert features(gray).shape == (2, 2048)


def test_load_state_dict_needs_architecture(tmp_path) -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2048))
    net(torch.zeros(1, 3 * 4 * 4))
    path = tmp_path / "weights.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(ValueError, match="architecture"):
        load_inception(path)

    def build() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2048))

    features = load_inception(path, architecture=build)
    assert isinstance(features, InceptionFeatures)
    assert features(torch.zeros(2, 3, 4, 4, dtype=torch.uint8)).shape == (2, 2048)


def test_missing_weights_never_download(tmp_path, monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path)
    monkeypatch.delenv("FASTPROGAN_INCEPTION", raising=False)
    assert find_inception() is None
    with pytest.raises(FileNotFoundError, match="--inception"):
        load_inception(None)
    with pytest.raises(FileNotFoundError):
        load_inception(tmp_path / "absent.pt")
