"""Reading the official release's (G, D, Gs) pickles: safety, mapping, gains, outputs.

The pickles are written by tests/models/official_format.py from the documented structure (random
weights). Outputs are held against (a) fastprogan's own `_ref` networks loaded with weights mapped by
hand in this file, and (b) an independent numpy forward pass with the official layouts and TF's
conv / transposed-conv conventions.
"""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch

from fastprogan.models import Discriminator, Generator
from fastprogan.models.official import (
    OfficialFormatError,
    UnsafePickleError,
    is_official_pickle,
    read_official,
)
from tests.models import official_format as of

RES, C, FB, FM = 16, 3, 64, 16  # nf: 16 at 4..16, latent 16


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "net.pkl"
    return path, of.write_official_pickle(path, res=RES, channels=C, fmap_base=FB, fmap_max=FM, seed=1)


def hand_mapped(variables: dict, net: str) -> dict[str, torch.Tensor]:
    """The documented transforms applied one by one (independent of the module under test)."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    out = {}
    for name, arr in variables.items():
        if name == "lod":
            continue
        scope, kind = name.rsplit("/", 1)
        parts = scope.split("/")
        if parts[0].startswith(("ToRGB_lod", "FromRGB_lod")):
            lod = int(parts[0].split("lod")[1])
            r = RES >> lod
            key = f"{'torgb' if net == 'G' else 'fromrgb'}.{r}x{r}"
        else:
            res, layer = parts
            ours = {
                ("G", "Dense"): "dense.linear" if kind == "weight" else "dense",
                ("G", "Conv"): "conv",
                ("G", "Conv0_up"): "conv0_up",
                ("G", "Conv1"): "conv1",
                ("D", "Conv"): "conv",
                ("D", "Conv0"): "conv0",
                ("D", "Conv1_down"): "conv1_down",
                ("D", "Dense0"): "dense0",
                ("D", "Dense1"): "dense1",
            }[(net, layer)]
            key = f"blocks.{res}.{ours}"
        if kind == "bias":
            out[f"{key}.bias"] = t(arr)
        elif arr.ndim == 2:  # dense [in, out] -> [out, in]
            out[f"{key}.weight"] = t(arr.T)
        elif scope.endswith("Conv0_up"):  # [k, k, OUT, IN] -> flipped OIHW
            out[f"{key}.weight"] = t(arr[::-1, ::-1].transpose(2, 3, 0, 1))
        else:  # [k, k, in, out] -> OIHW
            out[f"{key}.weight"] = t(arr.transpose(3, 2, 0, 1))
    return out


def ref_nets(written):
    G = Generator(RES, C, fmap_base=FB, fmap_max=FM, impl="ref")
    Gs = Generator(RES, C, fmap_base=FB, fmap_max=FM, impl="ref")
    D = Discriminator(RES, C, fmap_base=FB, fmap_max=FM, impl="ref")
    G.load_state_dict(hand_mapped(written["G"], "G"))
    Gs.load_state_dict(hand_mapped(written["Gs"], "G"))
    D.load_state_dict(hand_mapped(written["D"], "D"))
    return G, D, Gs


def test_import_matches_ref_networks_with_hand_mapped_weights(official):
    path, written = official
    nets = read_official(path)
    G, D, Gs = ref_nets(written)
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for lod in (0.0, 0.4, 1.0, 2.0):
            torch.testing.assert_close(nets.G(z, lod), G(z, lod), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(nets.G_ema(z, lod), Gs(z, lod), rtol=1e-5, atol=1e-5)
        img = torch.randn(4, C, RES, RES, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(nets.D(img), D(img), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(nets.D(img[:, :, ::2, ::2], 1.0), D(img[:, :, ::2, ::2], 1.0))
    assert (nets.resolution, nets.num_channels, nets.latent_size, nets.lod) == (RES, C, 16, 0.0)
    assert not nets.G_ema.training


def test_import_matches_the_official_arithmetic_in_numpy(official):
    """The documented official ops (TF conv/transposed-conv conventions) on the official layouts."""
    path, written = official
    nets = read_official(path)
    z = np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32)
    with torch.no_grad():
        ours = nets.G_ema(torch.from_numpy(z), 0.0).double().numpy()
    expected = of.g_forward(written["Gs"], z, RES)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(expected).max() > 0.1  # not a degenerate comparison
    img = np.random.default_rng(6).standard_normal((8, C, RES, RES)).astype(np.float32)
    with torch.no_grad():
        score = nets.D(torch.from_numpy(img)).double().numpy()
    np.testing.assert_allclose(score, of.d_forward(written["D"], img, RES, group=4), rtol=1e-4, atol=1e-4)
    # The comparison sees D's two layout facts: the stddev channel is the LAST input of 4x4/Conv ...
    v = dict(written["D"])
    w = v["4x4/Conv/weight"]  # [3, 3, C+1, C]
    v["4x4/Conv/weight"] = np.concatenate([w[:, :, -1:], w[:, :, :-1]], axis=2)  # as if it came first
    assert not np.allclose(score, of.d_forward(v, img, RES, group=4), rtol=1e-3, atol=1e-3)
    # ... and Dense0's rows follow the NCHW row-major flatten (an NHWC order gives other scores).
    v = dict(written["D"])
    w = v["4x4/Dense0/weight"]  # [C*16, out]
    c = w.shape[0] // 16
    v["4x4/Dense0/weight"] = w.reshape(c, 4, 4, -1).transpose(1, 2, 0, 3).reshape(c * 16, -1)
    assert not np.allclose(score, of.d_forward(v, img, RES, group=4), rtol=1e-3, atol=1e-3)


def test_conv0_up_layout_is_the_flipped_transposed_conv_filter():
    """One layer: TF's conv2d_transpose with the fused [4,4,OUT,IN] filter == nearest 2x + 3x3 conv
    with OIHW W[::-1, ::-1].transpose(2, 3, 0, 1)."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 3, 5, 7))  # [k, k, OUT, IN]
    x = rng.standard_normal((2, 7, 4, 4))
    expected = of.upscale2d_conv2d(x, w)
    up = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=2, mode="nearest")
    oihw = torch.from_numpy(np.ascontiguousarray(w[::-1, ::-1].transpose(2, 3, 0, 1)))
    ours = torch.nn.functional.conv2d(up, oihw, padding=1)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10, atol=1e-10)
    plain = torch.nn.functional.conv2d(
        up, torch.from_numpy(np.ascontiguousarray(w.transpose(2, 3, 0, 1))), padding=1
    )
    assert not np.allclose(plain.numpy(), expected)  # the flip matters


def test_gain_rules(official):
    nets = read_official(official[0])
    s2 = math.sqrt(2)
    assert nets.G.blocks["4x4"].dense.linear.weight_scale == pytest.approx(s2 / 4 / math.sqrt(16))
    assert nets.G.torgb["16x16"].weight_scale == pytest.approx(1 / math.sqrt(8))  # nf(3) = 8 inputs
    assert nets.G.torgb["4x4"].weight_scale == pytest.approx(1 / math.sqrt(16))
    assert nets.G.blocks["8x8"].conv0_up.weight_scale == pytest.approx(s2 / math.sqrt(9 * 16))  # 9 * C_in
    assert nets.G.blocks["16x16"].conv0_up.weight_scale == pytest.approx(s2 / math.sqrt(9 * 16))
    assert nets.D.blocks["16x16"].conv1_down.weight_scale == pytest.approx(s2 / math.sqrt(9 * 8))
    assert nets.D.blocks["4x4"].dense1.weight_scale == pytest.approx(1 / math.sqrt(16))
    assert nets.D.blocks["4x4"].dense0.weight_scale == pytest.approx(s2 / math.sqrt(16 * 16))
    assert nets.D.blocks["4x4"].conv.weight.shape == (16, 17, 3, 3)  # mbstd channel included


def test_numpy1_array_names_and_lod(tmp_path):
    path = tmp_path / "n1.pkl"
    written = of.write_official_pickle(path, res=8, channels=1, seed=3, lod=0.5, numpy1_names=True)
    assert b"numpy.core.multiarray" in path.read_bytes() and b"numpy._core" not in path.read_bytes()
    nets = read_official(path)
    assert nets.lod == 0.5 and nets.num_channels == 1 and nets.resolution == 8
    assert is_official_pickle(path)
    w = written["Gs"]["8x8/Conv1/weight"]
    torch.testing.assert_close(
        nets.G_ema.blocks["8x8"].conv1.weight, torch.from_numpy(w.transpose(3, 2, 0, 1))
    )


class _Gadget:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecGadget:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("gadget", [_Gadget, _ExecGadget])
def test_reduce_gadget_is_refused_and_never_runs(tmp_path, gadget):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    # Same format as a release file, with the gadget hidden inside D's variables.
    net = of.Network("D", {"resolution": 8}, [("lod", np.float32(0)), ("4x4/Conv/weight", gadget(marker))])
    with of._tfutil_module():
        path.write_bytes(pickle.dumps((net, net, net), protocol=4))
    with pytest.raises(UnsafePickleError, match="refused global"):
        read_official(path)
    assert not marker.exists()


def test_build_module_src_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    src = f"open({str(marker)!r}, 'w').write('ran')\n"
    path = tmp_path / "net.pkl"
    of.write_official_pickle(path, res=8, build_module_src=src)
    read_official(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"label_size": 10}, "conditional networks are not supported"),
        ({"fused_scale": False}, "fused_scale"),
        ({"use_wscale": False}, "use_wscale"),
        ({"resolution": 32}, "missing"),  # variables of a 16px network, kwargs of a 32px one
        ({"fmap_max": 8}, "shape"),
    ],
)
def test_unsupported_or_inconsistent_networks_are_named(tmp_path, kwargs, needle):
    path = tmp_path / "net.pkl"
    of.write_official_pickle(path, res=16, extra_kwargs=kwargs)
    with pytest.raises(OfficialFormatError, match=needle):
        read_official(path)


def test_not_a_network_file(tmp_path):
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(OfficialFormatError, match=r"expected the tuple \(G, D, Gs\)"):
        read_official(p)
    p.write_bytes(b"\x80\x02garbage")
    with pytest.raises(OfficialFormatError, match="x.pkl"):
        read_official(p)
    with pytest.raises(OfficialFormatError, match="cannot read"):
        read_official(tmp_path / "missing.pkl")
