"""Test-side writer of official-format network pickles (PROGAN_SPEC.md section 5) and an independent
numpy forward pass with the official layouts and arithmetic (TensorFlow's conv / transposed-conv
conventions written out as loops over kernel taps), used as oracles for fastprogan.models.official.

Nothing here imports fastprogan: the structure, names and shapes come from the spec.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types

import numpy as np

_tfutil = types.ModuleType("tfutil")


class Network:
    """Pickles as ``tfutil.Network`` with the documented ``__getstate__`` dict."""

    def __init__(self, name, static_kwargs, variables, build_module_src="", build_func_name="G_paper"):
        self.state = {
            "version": 2,
            "name": name,
            "static_kwargs": static_kwargs,
            "build_module_src": build_module_src,
            "build_func_name": build_func_name,
            "variables": variables,
        }

    def __getstate__(self):
        return self.state


Network.__module__ = "tfutil"
_tfutil.Network = Network


@contextlib.contextmanager
def _tfutil_module():
    sys.modules["tfutil"] = _tfutil
    try:
        yield
    finally:
        del sys.modules["tfutil"]


def nf(stage, fmap_base, fmap_max):
    return min(int(fmap_base / 2.0**stage), fmap_max)


def official_variables(res, channels, fmap_base, fmap_max, latent, rng, *, lod=0.0, mbstd=True):
    """(G variables, D variables) as lists of (name, float32 array), random N(0,1) weights, biases ~0.1."""
    L = int(math.log2(res))
    n = lambda s: nf(s, fmap_base, fmap_max)

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def b(k):
        return (0.1 * rng.standard_normal(k)).astype(np.float32)

    g = [("lod", np.float32(lod))]
    g += [("4x4/Dense/weight", w(latent, n(1) * 16)), ("4x4/Dense/bias", b(n(1)))]
    g += [("4x4/Conv/weight", w(3, 3, n(1), n(1))), ("4x4/Conv/bias", b(n(1)))]
    for r in range(3, L + 1):
        k = f"{2**r}x{2**r}"
        g += [(f"{k}/Conv0_up/weight", w(3, 3, n(r - 1), n(r - 2))), (f"{k}/Conv0_up/bias", b(n(r - 1)))]
        g += [(f"{k}/Conv1/weight", w(3, 3, n(r - 1), n(r - 1))), (f"{k}/Conv1/bias", b(n(r - 1)))]
    for r in range(2, L + 1):
        g += [
            (f"ToRGB_lod{L - r}/weight", w(1, 1, n(r - 1), channels)),
            (f"ToRGB_lod{L - r}/bias", b(channels)),
        ]
    d = [("lod", np.float32(lod))]
    for r in range(L, 2, -1):
        k = f"{2**r}x{2**r}"
        d += [
            (f"FromRGB_lod{L - r}/weight", w(1, 1, channels, n(r - 1))),
            (f"FromRGB_lod{L - r}/bias", b(n(r - 1))),
        ]
        d += [(f"{k}/Conv0/weight", w(3, 3, n(r - 1), n(r - 1))), (f"{k}/Conv0/bias", b(n(r - 1)))]
        d += [(f"{k}/Conv1_down/weight", w(3, 3, n(r - 1), n(r - 2))), (f"{k}/Conv1_down/bias", b(n(r - 2)))]
    d += [(f"FromRGB_lod{L - 2}/weight", w(1, 1, channels, n(1))), (f"FromRGB_lod{L - 2}/bias", b(n(1)))]
    d += [("4x4/Conv/weight", w(3, 3, n(1) + (1 if mbstd else 0), n(1))), ("4x4/Conv/bias", b(n(1)))]
    d += [("4x4/Dense0/weight", w(n(1) * 16, n(0))), ("4x4/Dense0/bias", b(n(0)))]
    d += [("4x4/Dense1/weight", w(n(0), 1)), ("4x4/Dense1/bias", b(1))]
    return g, d


def write_official_pickle(
    path,
    *,
    res=16,
    channels=3,
    fmap_base=64,
    fmap_max=16,
    latent=None,
    seed=0,
    lod=0.0,
    extra_kwargs=None,
    numpy1_names=False,
    build_module_src="",
    mbstd_group_size=4,
):
    """Write ``(G, D, Gs)`` like the release; returns {"G": vars, "D": vars, "Gs": vars, "kwargs": ...}."""
    latent = latent or nf(0, fmap_base, fmap_max)
    rng = np.random.default_rng(seed)
    kwargs = dict(
        num_channels=channels,
        resolution=res,
        label_size=0,
        fmap_base=fmap_base,
        fmap_max=fmap_max,
        latent_size=latent,
    )
    kwargs.update(extra_kwargs or {})
    g_vars, d_vars = official_variables(res, channels, fmap_base, fmap_max, latent, rng, lod=lod)
    gs_vars, _ = official_variables(res, channels, fmap_base, fmap_max, latent, rng, lod=lod)
    d_kwargs = {k: v for k, v in kwargs.items() if k not in ("latent_size",)}
    d_kwargs["mbstd_group_size"] = mbstd_group_size
    nets = (
        Network("G", kwargs, g_vars, build_module_src),
        Network("D", d_kwargs, d_vars, build_module_src, "D_paper"),
        Network("Gs", kwargs, gs_vars, build_module_src),
    )
    # The release wrote pickle.HIGHEST_PROTOCOL of Python 3.6 (4). Protocol 3 writes globals as text
    # lines, so the numpy-2 module name can be swapped for numpy 1's (as the 2018 files name it).
    with _tfutil_module():
        data = pickle.dumps(nets, protocol=3 if numpy1_names else 4)
    if numpy1_names:
        data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    with open(path, "wb") as f:
        f.write(data)
    return {"G": dict(g_vars), "D": dict(d_vars), "Gs": dict(gs_vars), "kwargs": kwargs}


# ---- the official arithmetic, in numpy with the official layouts -------------------------------


def _lrelu(x):
    return np.where(x >= 0, x, 0.2 * x)


def _pn(x, eps=1e-8):
    return x / np.sqrt(np.mean(x**2, axis=1, keepdims=True) + eps)


def _scale(w, gain=None, fan_in=None):
    gain = math.sqrt(2) if gain is None else gain
    fan_in = np.prod(w.shape[:-1]) if fan_in is None else fan_in
    return w * (gain / np.sqrt(fan_in))


def conv_same(x, w):
    """TF conv2d, NCHW, filter [k, k, in, out], stride 1, SAME (cross-correlation)."""
    k = w.shape[0]
    p = k // 2
    n, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    y = np.zeros((n, w.shape[3], h, wd))
    for i in range(k):
        for j in range(k):
            y += np.einsum("nchw,co->nohw", xp[:, :, i : i + h, j : j + wd], w[i, j])
    return y


def _fused_kernel(w):
    """The official fused-resampling kernel: pad the 3x3 filter to 5x5 and sum its four 4x4 shifts."""
    wp = np.pad(w, ((1, 1), (1, 1), (0, 0), (0, 0)))
    return wp[1:, 1:] + wp[:-1, 1:] + wp[1:, :-1] + wp[:-1, :-1]


def upscale2d_conv2d(x, w):
    """TF conv2d_transpose(stride 2, SAME, output 2H) with the fused filter [4, 4, OUT, IN]: every input
    pixel p scatters into output rows 2p - 1 + di (the adjoint of a stride-2 SAME conv, pad 1)."""
    f = _fused_kernel(w)
    n, _, h, wd = x.shape
    y = np.zeros((n, f.shape[2], 2 * h + 2, 2 * wd + 2))  # one extra row/col each side, cropped below
    for di in range(4):
        for dj in range(4):
            contrib = np.einsum("nchw,oc->nohw", x, f[di, dj])
            y[:, :, di : di + 2 * h : 2, dj : dj + 2 * wd : 2] += contrib
    return y[:, :, 1 : 1 + 2 * h, 1 : 1 + 2 * wd]


def conv2d_downscale2d(x, w):
    """TF conv2d(stride 2, SAME) with the fused filter x0.25 [4, 4, in, out]: output p reads input rows
    2p - 1 + di (pad 1)."""
    f = _fused_kernel(w) * 0.25
    n, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((n, f.shape[3], h // 2, wd // 2))
    for di in range(4):
        for dj in range(4):
            y += np.einsum("nchw,co->nohw", xp[:, :, di : di + h : 2, dj : dj + wd : 2], f[di, dj])
    return y


def g_forward(v, z, res):
    """The official G at lod 0 (float64). v: variables by name; z [N, latent]."""
    L = int(math.log2(res))
    x = _pn(z.astype(np.float64))
    w = v["4x4/Dense/weight"]
    x = x @ _scale(w, math.sqrt(2) / 4)
    c = v["4x4/Dense/bias"].shape[0]
    x = _pn(_lrelu(x.reshape(-1, c, 4, 4) + v["4x4/Dense/bias"][None, :, None, None]))
    x = _pn(_lrelu(conv_same(x, _scale(v["4x4/Conv/weight"])) + v["4x4/Conv/bias"][None, :, None, None]))
    for r in range(3, L + 1):
        k = f"{2**r}x{2**r}"
        w = v[f"{k}/Conv0_up/weight"]
        w = _scale(w, fan_in=9 * w.shape[3])  # fan-in of the 3x3 kernel: 9 * C_in (C_in is last here)
        x = _pn(_lrelu(upscale2d_conv2d(x, w) + v[f"{k}/Conv0_up/bias"][None, :, None, None]))
        x = _pn(
            _lrelu(conv_same(x, _scale(v[f"{k}/Conv1/weight"])) + v[f"{k}/Conv1/bias"][None, :, None, None])
        )
    return conv_same(x, _scale(v["ToRGB_lod0/weight"], 1.0)) + v["ToRGB_lod0/bias"][None, :, None, None]


def _mbstd(x, group):
    n, c, h, w = x.shape
    g = min(group, n)
    y = x.reshape(g, n // g, c, h, w)
    y = y - y.mean(axis=0, keepdims=True)
    y = np.sqrt((y**2).mean(axis=0) + 1e-8)  # [M, C, H, W]
    y = y.mean(axis=(1, 2, 3))  # [M]
    s = np.tile(y, g)  # sample n belongs to group n mod M
    return np.concatenate([x, np.broadcast_to(s[:, None, None, None], (n, 1, h, w))], axis=1)


def d_forward(v, img, res, group=4):
    """The official D at lod 0 (float64): img [N, C, R, R] -> [N, 1]."""
    L = int(math.log2(res))
    b = lambda name: v[name][None, :, None, None]
    x = _lrelu(conv_same(img.astype(np.float64), _scale(v["FromRGB_lod0/weight"])) + b("FromRGB_lod0/bias"))
    for r in range(L, 2, -1):
        k = f"{2**r}x{2**r}"
        x = _lrelu(conv_same(x, _scale(v[f"{k}/Conv0/weight"])) + b(f"{k}/Conv0/bias"))
        x = _lrelu(conv2d_downscale2d(x, _scale(v[f"{k}/Conv1_down/weight"])) + b(f"{k}/Conv1_down/bias"))
    if group > 1:
        x = _mbstd(x, group)
    x = _lrelu(conv_same(x, _scale(v["4x4/Conv/weight"])) + b("4x4/Conv/bias"))
    x = x.reshape(x.shape[0], -1)  # NCHW row-major
    x = _lrelu(x @ _scale(v["4x4/Dense0/weight"]) + v["4x4/Dense0/bias"])
    return x @ _scale(v["4x4/Dense1/weight"], 1.0) + v["4x4/Dense1/bias"]
