"""Generator / Discriminator: paper parameter counts, shapes at every lod, fades, naming, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from fastprogan.models import Discriminator, Generator, level_for, lod_for

SMALL = dict(fmap_base=64, fmap_max=16)  # narrow networks for CPU tests


def _nf(stage, base=8192, maxf=512):
    return min(base // 2**stage, maxf)


def expected_counts(res_log2, channels=3, base=8192, maxf=512, latent=None, mbstd=True):
    """Parameter counts derived from the paper's architecture table, independent of the module code."""
    nf = lambda s: _nf(s, base, maxf)
    latent = nf(0) if latent is None else latent
    conv = lambda ci, co, k: ci * co * k * k + co
    g = latent * nf(1) * 16 + nf(1)  # dense to 4x4 maps, bias per map
    g += conv(nf(1), nf(1), 3) + conv(nf(1), channels, 1)
    d = conv(channels, nf(1), 1) + conv(nf(1) + int(mbstd), nf(1), 3)
    d += nf(1) * 16 * nf(0) + nf(0) + nf(0) * 1 + 1
    for r in range(3, res_log2 + 1):
        g += conv(nf(r - 2), nf(r - 1), 3) + conv(nf(r - 1), nf(r - 1), 3) + conv(nf(r - 1), channels, 1)
        d += conv(channels, nf(r - 1), 1) + conv(nf(r - 1), nf(r - 1), 3) + conv(nf(r - 1), nf(r - 2), 3)
    return g, d


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_paper_parameter_counts_at_1024():
    with torch.device("meta"):
        G, D = Generator(1024, 3), Discriminator(1024, 3)
    g, d = expected_counts(10)
    assert (count(G), count(D)) == (g, d) == (23_079_115, 23_087_249)
    assert round(count(G) / 1e6, 1) == 23.1 and round(count(D) / 1e6, 1) == 23.1  # the paper's table


@pytest.mark.parametrize(
    ("res", "ch", "base", "maxf"), [(4, 3, 8192, 512), (32, 1, 256, 64), (128, 3, 1024, 128)]
)
def test_smaller_configurations_counts(res, ch, base, maxf):
    with torch.device("meta"):
        G = Generator(res, ch, fmap_base=base, fmap_max=maxf)
        D = Discriminator(res, ch, fmap_base=base, fmap_max=maxf)
    assert (count(G), count(D)) == expected_counts(int(math.log2(res)), ch, base, maxf)


def test_state_dict_names_map_to_paper_layers():
    G, D = Generator(16, **SMALL), Discriminator(16, **SMALL)
    gk, dk = set(G.state_dict()), set(D.state_dict())
    for k in [
        "blocks.4x4.dense.linear.weight",
        "blocks.4x4.dense.bias",
        "blocks.4x4.conv.weight",
        "blocks.8x8.conv0_up.weight",
        "blocks.16x16.conv1.bias",
        "torgb.4x4.weight",
        "torgb.16x16.bias",
    ]:
        assert k in gk, k
    for k in [
        "fromrgb.16x16.weight",
        "blocks.16x16.conv0.weight",
        "blocks.16x16.conv1_down.weight",
        "blocks.4x4.conv.weight",
        "blocks.4x4.dense0.weight",
        "blocks.4x4.dense1.bias",
        "fromrgb.4x4.bias",
    ]:
        assert k in dk, k


LODS = [
    (3.0, 4, 1.0),
    (2.75, 8, 0.25),
    (2.0, 8, 1.0),
    (1.5, 16, 0.5),
    (1.0, 16, 1.0),
    (0.1, 32, 0.9),
    (0.0, 32, 1.0),
]


@pytest.mark.parametrize(("lod", "res", "alpha"), LODS)
def test_shapes_and_level_at_every_lod(lod, res, alpha):
    level = level_for(5, lod)
    assert level.resolution == res and level.alpha == pytest.approx(alpha)
    assert lod_for(5, res, level.alpha) == pytest.approx(lod)
    G, D = Generator(32, 3, **SMALL), Discriminator(32, 3, **SMALL)
    img = G(torch.randn(4, G.latent_size), lod)
    assert img.shape == (4, 3, res, res)
    assert D(img, lod).shape == (4, 1)
    assert torch.equal(
        G(torch.zeros(2, G.latent_size) + 1, resolution=res, alpha=alpha),
        G(torch.zeros(2, G.latent_size) + 1, lod),
    )


def test_generator_fade_endpoints():
    torch.manual_seed(0)
    G = Generator(32, 3, **SMALL).double()
    z = torch.randn(4, G.latent_size, dtype=torch.float64)
    prev = G(z, resolution=8)
    at0 = G(z, resolution=16, alpha=0.0)
    torch.testing.assert_close(at0, F.interpolate(prev, scale_factor=2, mode="nearest"), rtol=0, atol=1e-12)
    new_only = G.torgb["16x16"](
        G.blocks["16x16"](
            G.blocks["8x8"](G.blocks["4x4"](z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)))
        )
    )
    torch.testing.assert_close(G(z, resolution=16, alpha=1.0), new_only, rtol=0, atol=1e-12)
    mid = G(z, resolution=16, alpha=0.3)  # continuous in alpha: a linear blend of the endpoints
    torch.testing.assert_close(mid, 0.7 * at0 + 0.3 * new_only, rtol=0, atol=1e-10)


def test_discriminator_fade_endpoints():
    torch.manual_seed(0)
    D = Discriminator(32, 3, **SMALL).double()
    img = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(D(img, alpha=0.0), D(F.avg_pool2d(img, 2)), rtol=0, atol=1e-12)
    full = D.blocks["4x4"](D.blocks["8x8"](D.blocks["16x16"](D.fromrgb["16x16"](img))))
    torch.testing.assert_close(D(img, alpha=1.0), full, rtol=0, atol=1e-12)


def test_bad_model_inputs():
    with pytest.raises(ValueError, match="resolution must be a power of two"):
        Generator(48)
    with pytest.raises(ValueError, match="num_channels must be 1 or 3"):
        Discriminator(32, 4, **SMALL)
    G, D = Generator(32, **SMALL), Discriminator(32, **SMALL)
    with pytest.raises(ValueError, match=r"z must be \[N, 16\]"):
        G(torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"lod must be in \[0, 3\]"):
        G(torch.randn(2, 16), 3.5)
    with pytest.raises(ValueError, match="alpha < 1 needs a previous resolution"):
        G(torch.randn(2, 16), resolution=4, alpha=0.5)
    with pytest.raises(ValueError, match="lod 1.0 means 16px images, got 8px"):
        D(torch.randn(4, 3, 8, 8), 1.0)
    with pytest.raises(ValueError, match=r"images must be \[N, 3, R, R\]"):
        D(torch.randn(4, 1, 8, 8))
    with pytest.raises(ValueError, match="N=6 is not divisible by group_size=4"):
        D(torch.randn(6, 3, 8, 8))
