"""The official release's network pickles (``karras2018iclr-*.pkl``) without TensorFlow and without
running any code from the file (PROGAN_SPEC.md section 5).

A release file is one pickle of the tuple ``(G, D, Gs)``; each is a ``tfutil.Network`` restored through
``__setstate__`` from a dict (``version``, ``name``, ``static_kwargs``, ``build_module_src``,
``build_func_name``, ``variables``: a list of (name, float32 numpy array)). :class:`SafeUnpickler`
resolves only the globals that structure needs: a :class:`Network` stand-in (which keeps the dict and
nothing else; ``build_module_src`` is never executed, compiled or imported) and numpy's array / scalar /
dtype reconstruction. Any other global (``os.system``, ``builtins.exec``, ``copyreg`` helpers, ...) is
refused with :class:`UnsafePickleError` before it can be called.

Variable names and layouts map onto :class:`~fastprogan.models.Generator` and
:class:`~fastprogan.models.Discriminator` state-dict names:

====================================  =====================================  ==========================
official (relative to the network)     fastprogan                              layout
====================================  =====================================  ==========================
G ``4x4/Dense/weight`` [Z, nf*16]      ``blocks.4x4.dense.linear.weight``      ``.T``
G ``4x4/Dense/bias`` [nf]              ``blocks.4x4.dense.bias``               as is (after the reshape)
G ``4x4/Conv/weight`` [3,3,in,out]     ``blocks.4x4.conv.weight``              ``transpose(3,2,0,1)``
G ``RxR/Conv0_up/weight`` [3,3,O,I]    ``blocks.RxR.conv0_up.weight``          ``W[::-1,::-1].transpose(2,3,0,1)``
G ``RxR/Conv1/weight``                 ``blocks.RxR.conv1.weight``             ``transpose(3,2,0,1)``
G ``ToRGB_lod{k}/weight`` [1,1,C,c]    ``torgb.RxR.weight`` (R = 2**(L-k))     ``transpose(3,2,0,1)``
D ``FromRGB_lod{k}``                   ``fromrgb.RxR``                         ``transpose(3,2,0,1)``
D ``RxR/Conv0``, ``RxR/Conv1_down``    ``blocks.RxR.conv0``, ``.conv1_down``   ``transpose(3,2,0,1)``
D ``4x4/Conv`` (mbstd channel last)    ``blocks.4x4.conv``                     ``transpose(3,2,0,1)``
D ``4x4/Dense0``, ``4x4/Dense1``       ``blocks.4x4.dense0``, ``.dense1``      ``.T`` (NCHW flatten)
====================================  =====================================  ==========================

Every ``*/bias`` maps to the same module's ``bias``. Stored weights are the unscaled equalized-LR
parameters, exactly what fastprogan stores; the run-time scales agree layer by layer (``gain /
sqrt(fan_in)``, gain sqrt(2) except G's ``4x4/Dense`` sqrt(2)/4, ``ToRGB`` 1, D's ``4x4/Dense1`` 1;
fan-in ``9 * C_in`` for the fused resampling convs), and :func:`check_gains` asserts it on the built
networks. The scalar ``lod`` variable is the level of detail the network was saved at.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastprogan.models.discriminator import Discriminator
from fastprogan.models.generator import Generator, res_key
from fastprogan.models.progressive import resolution_log2


class OfficialFormatError(ValueError):
    """The file is not a usable official network pickle; the message names the file and the reason."""


class UnsafePickleError(OfficialFormatError):
    """The pickle asked for a global outside the allow-list (it would run code): refused, nothing ran."""


# Defaults of the official constructors (PROGAN_SPEC.md section 1) for keys a pickle leaves out.
DEFAULT_KWARGS: dict[str, Any] = {
    "num_channels": 3,
    "resolution": 1024,
    "label_size": 0,
    "fmap_base": 8192,
    "fmap_decay": 1.0,
    "fmap_max": 512,
    "latent_size": None,
    "normalize_latents": True,
    "use_wscale": True,
    "use_pixelnorm": True,
    "pixelnorm_epsilon": 1e-8,
    "use_leakyrelu": True,
    "use_batchnorm": False,
    "fused_scale": True,
    "mbstd_group_size": 4,
}
# Settings whose other values change the graph in ways the fastprogan networks do not model.
_REQUIRED = {
    "use_wscale": True,
    "use_leakyrelu": True,
    "use_batchnorm": False,
    "fused_scale": True,
}


class Network:
    """Stand-in for ``tfutil.Network``: ``__setstate__`` keeps the plain fields of the dict.

    ``build_module_src`` is kept as text for inspection only; nothing here ever compiles or runs it.
    """

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise OfficialFormatError(f"tfutil.Network state must be a dict, got {type(state).__name__}")
        self.version = state.get("version")
        self.name = state.get("name")
        self.static_kwargs = dict(state.get("static_kwargs") or {})
        self.build_func_name = state.get("build_func_name")
        self.build_module_src = state.get("build_module_src")
        self.variables = state.get("variables")


try:  # numpy 2 moved the module; both names appear in pickles
    from numpy._core.multiarray import _reconstruct as _NUMPY_RECONSTRUCT
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _NUMPY_RECONSTRUCT


def _reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ndarray unpickling entry point, limited to plain ndarrays."""
    if cls is not np.ndarray:
        raise UnsafePickleError(f"numpy array reconstruction of {cls!r} refused (only numpy.ndarray)")
    return _NUMPY_RECONSTRUCT(np.ndarray, shape, dtype)


def _scalar(dtype: Any, data: Any = None) -> Any:
    """numpy's scalar unpickling entry point (TF returns 0-d variables such as ``lod`` as numpy
    scalars), limited to numeric dtypes built from raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes):
        raise UnsafePickleError(f"numpy scalar of dtype {dtype!r} refused (only numeric from bytes)")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(obj, str):
        raise UnsafePickleError(f"numpy.dtype({obj!r}) refused (only dtype names)")
    return np.dtype(obj, bool(align), bool(copy))


# The whole allow-list: (module, name) -> the callable the unpickler may use.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("tfutil", "Network"): Network,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2 writes this name
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in the allow-list; every other one raises
    :class:`UnsafePickleError` before anything is called."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"refused global {module}.{name}: an official network pickle needs only tfutil.Network "
                "and numpy arrays (this file would run code when loaded)"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused persistent id: official network pickles have none")


def safe_load_pickle(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler` (UnsafePickleError on any other global)."""
    return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()


# ---- reading the networks -----------------------------------------------------------------------


@dataclass
class OfficialNetwork:
    """One network of the file: its name, its construction arguments (defaults filled in) and its
    variables as float32 arrays by relative name."""

    name: str
    kwargs: dict[str, Any]
    variables: dict[str, np.ndarray]
    lod: float = 0.0


@dataclass
class OfficialNetworks:
    """The file's three networks as fastprogan modules, and the facts a checkpoint needs."""

    G: Generator
    D: Discriminator
    G_ema: Generator
    lod: float  # Gs's lod variable: the level of detail it was saved at (0: full resolution)
    resolution: int
    num_channels: int
    latent_size: int
    pixelnorm_eps: float
    mbstd_group_size: int
    fmap: dict[str, Any] = field(default_factory=dict)  # fmap_base, fmap_decay, fmap_max


def _network(obj: Any, what: str, where: str) -> OfficialNetwork:
    if not isinstance(obj, Network):
        raise OfficialFormatError(f"{where}: {what} is a {type(obj).__name__}, not a tfutil.Network")
    if obj.version not in (2, None):
        raise OfficialFormatError(f"{where}: {what} has Network version {obj.version!r}; this reader knows 2")
    if not isinstance(obj.variables, (list, tuple)):
        raise OfficialFormatError(f"{where}: {what} has no variables list")
    kwargs = {**DEFAULT_KWARGS, **obj.static_kwargs}
    if int(kwargs.get("label_size") or 0) > 0:
        raise OfficialFormatError(
            f"{where}: {what} has label_size {kwargs['label_size']}: conditional networks are not supported"
        )
    for key, needed in _REQUIRED.items():
        if bool(kwargs[key]) != needed:
            raise OfficialFormatError(
                f"{where}: {what} has {key}={kwargs[key]!r}; only {needed} is supported"
            )
    prefix = f"{obj.name}/" if isinstance(obj.name, str) else None
    variables: dict[str, np.ndarray] = {}
    lod = 0.0
    for item in obj.variables:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
            raise OfficialFormatError(f"{where}: {what} variables must be (name, array) pairs")
        name, value = item
        if prefix and name.startswith(prefix):
            name = name[len(prefix) :]
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            raise OfficialFormatError(f"{where}: {what} variable {name} has dtype {arr.dtype}, not float")
        if name == "lod":
            lod = float(arr)
            continue
        if not np.isfinite(arr).all():
            raise OfficialFormatError(f"{where}: {what} variable {name} holds NaN/Inf")
        variables[name] = arr.astype(np.float32)
    name = obj.name if isinstance(obj.name, str) else what
    return OfficialNetwork(name, kwargs, variables, lod)


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(3, 2, 0, 1)  # [k, k, in, out] -> OIHW


def _conv_up(w: np.ndarray) -> np.ndarray:
    return w[::-1, ::-1].transpose(2, 3, 0, 1)  # [k, k, OUT, IN], transposed-conv filter -> OIHW


def _dense(w: np.ndarray) -> np.ndarray:
    return w.T  # [in, out] -> [out, in]


def generator_mapping(res_log2: int) -> dict[str, tuple[str, Any]]:
    """Official G variable name -> (fastprogan state-dict name, layout transform) for a 2**res_log2 G."""
    m: dict[str, tuple[str, Any]] = {
        "4x4/Dense/weight": ("blocks.4x4.dense.linear.weight", _dense),
        "4x4/Dense/bias": ("blocks.4x4.dense.bias", None),
        "4x4/Conv/weight": ("blocks.4x4.conv.weight", _conv),
        "4x4/Conv/bias": ("blocks.4x4.conv.bias", None),
    }
    for r in range(3, res_log2 + 1):
        k = res_key(r)
        m[f"{k}/Conv0_up/weight"] = (f"blocks.{k}.conv0_up.weight", _conv_up)
        m[f"{k}/Conv0_up/bias"] = (f"blocks.{k}.conv0_up.bias", None)
        m[f"{k}/Conv1/weight"] = (f"blocks.{k}.conv1.weight", _conv)
        m[f"{k}/Conv1/bias"] = (f"blocks.{k}.conv1.bias", None)
    for r in range(2, res_log2 + 1):
        lod = res_log2 - r
        m[f"ToRGB_lod{lod}/weight"] = (f"torgb.{res_key(r)}.weight", _conv)
        m[f"ToRGB_lod{lod}/bias"] = (f"torgb.{res_key(r)}.bias", None)
    return m


def discriminator_mapping(res_log2: int) -> dict[str, tuple[str, Any]]:
    """Official D variable name -> (fastprogan state-dict name, layout transform)."""
    m: dict[str, tuple[str, Any]] = {}
    for r in range(2, res_log2 + 1):
        lod = res_log2 - r
        m[f"FromRGB_lod{lod}/weight"] = (f"fromrgb.{res_key(r)}.weight", _conv)
        m[f"FromRGB_lod{lod}/bias"] = (f"fromrgb.{res_key(r)}.bias", None)
    for r in range(3, res_log2 + 1):
        k = res_key(r)
        for off, ours in (("Conv0", "conv0"), ("Conv1_down", "conv1_down")):
            m[f"{k}/{off}/weight"] = (f"blocks.{k}.{ours}.weight", _conv)
            m[f"{k}/{off}/bias"] = (f"blocks.{k}.{ours}.bias", None)
    for off, ours, t in (("Conv", "conv", _conv), ("Dense0", "dense0", _dense), ("Dense1", "dense1", _dense)):
        m[f"4x4/{off}/weight"] = (f"blocks.4x4.{ours}.weight", t)
        m[f"4x4/{off}/bias"] = (f"blocks.4x4.{ours}.bias", None)
    return m


def _load_mapped(
    module: torch.nn.Module, net: OfficialNetwork, mapping: dict[str, tuple[str, Any]], where: str
) -> None:
    missing = sorted(set(mapping) - set(net.variables))
    unknown = sorted(set(net.variables) - set(mapping))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
        if unknown:
            parts.append(f"unexpected {', '.join(unknown[:6])}{' ...' if len(unknown) > 6 else ''}")
        raise OfficialFormatError(
            f"{where}: {net.name} variables do not match a {module.resolution}px ProGAN network: "
            + "; ".join(parts)
        )
    own = module.state_dict()
    state = {}
    for name, (ours, transform) in mapping.items():
        arr = net.variables[name]
        value = torch.from_numpy(np.ascontiguousarray(transform(arr) if transform else arr))
        if tuple(value.shape) != tuple(own[ours].shape):
            raise OfficialFormatError(
                f"{where}: {net.name} variable {name} has shape {tuple(arr.shape)}, which maps to "
                f"{tuple(value.shape)}; the network built from static_kwargs needs {tuple(own[ours].shape)}"
            )
        state[ours] = value
    module.load_state_dict(state, strict=True)


def _build_generator(net: OfficialNetwork, impl: str) -> Generator:
    kw = net.kwargs
    return Generator(
        resolution=int(kw["resolution"]),
        num_channels=int(kw["num_channels"]),
        fmap_base=int(kw["fmap_base"]),
        fmap_decay=float(kw["fmap_decay"]),
        fmap_max=int(kw["fmap_max"]),
        latent_size=None if kw["latent_size"] is None else int(kw["latent_size"]),
        normalize_latents=bool(kw["normalize_latents"]),
        use_pixelnorm=bool(kw["use_pixelnorm"]),
        pixelnorm_eps=float(kw["pixelnorm_epsilon"]),
        impl=impl,
    )


def _build_discriminator(net: OfficialNetwork, impl: str) -> Discriminator:
    kw = net.kwargs
    return Discriminator(
        resolution=int(kw["resolution"]),
        num_channels=int(kw["num_channels"]),
        fmap_base=int(kw["fmap_base"]),
        fmap_decay=float(kw["fmap_decay"]),
        fmap_max=int(kw["fmap_max"]),
        mbstd_group_size=int(kw["mbstd_group_size"]),
        impl=impl,
    )


def official_gain(net: str, name: str) -> float:
    """The official equalized-LR gain of fastprogan layer ``name`` in ``net`` ("G" or "D")."""
    if net == "G" and name.endswith("dense.linear"):
        return math.sqrt(2.0) / 4
    if (net == "G" and name.startswith("torgb.")) or (net == "D" and name.endswith("dense1")):
        return 1.0
    return math.sqrt(2.0)


def check_gains(G: Generator, D: Discriminator) -> None:
    """Check that every layer's run-time scale is the official ``gain / sqrt(fan_in)``
    (OfficialFormatError naming the layer otherwise)."""
    for net, module in (("G", G), ("D", D)):
        for name, m in module.named_modules():
            if not hasattr(m, "weight_scale"):
                continue
            fan_in = int(np.prod(m.weight.shape[1:]))  # OIHW / [out, in]: k*k*C_in, resampling convs too
            want = official_gain(net, name) / math.sqrt(fan_in)
            if not math.isclose(m.weight_scale, want, rel_tol=1e-12):
                raise OfficialFormatError(f"{net}.{name}: weight scale {m.weight_scale} != official {want}")


def read_official(path: str | os.PathLike, *, impl: str = "auto") -> OfficialNetworks:
    """Read an official ``(G, D, Gs)`` pickle into fastprogan networks (eval mode, on the CPU).

    Raises :class:`UnsafePickleError` for a file that asks for anything but the allowed globals and
    :class:`OfficialFormatError` (naming the file) for any other problem, including conditional
    networks (``label_size > 0``).
    """
    p = Path(path)
    where = str(p)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise OfficialFormatError(f"{where}: cannot read ({exc.strerror or exc})") from None
    try:
        obj = safe_load_pickle(data)
    except OfficialFormatError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise OfficialFormatError(f"{where}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise OfficialFormatError(f"{where}: expected the tuple (G, D, Gs), got {type(obj).__name__}")
    g, d, gs = (_network(o, w, where) for o, w in zip(obj, ("G", "D", "Gs"), strict=True))
    for key in ("resolution", "num_channels", "fmap_base", "fmap_decay", "fmap_max"):
        if not g.kwargs[key] == d.kwargs[key] == gs.kwargs[key]:
            raise OfficialFormatError(f"{where}: G, D and Gs disagree on {key}")
    try:
        res_log2 = resolution_log2(int(g.kwargs["resolution"]))
        G, G_ema, D = _build_generator(g, impl), _build_generator(gs, impl), _build_discriminator(d, impl)
    except ValueError as exc:
        raise OfficialFormatError(f"{where}: static_kwargs: {exc}") from None
    _load_mapped(G, g, generator_mapping(res_log2), where)
    _load_mapped(G_ema, gs, generator_mapping(res_log2), where)
    _load_mapped(D, d, discriminator_mapping(res_log2), where)
    check_gains(G, D)
    if not 0.0 <= gs.lod <= res_log2 - 2:
        raise OfficialFormatError(f"{where}: Gs lod {gs.lod} outside [0, {res_log2 - 2}]")
    for m in (G, D, G_ema):
        m.eval().requires_grad_(False)
    return OfficialNetworks(
        G=G,
        D=D,
        G_ema=G_ema,
        lod=gs.lod,
        resolution=1 << res_log2,
        num_channels=G.num_channels,
        latent_size=G.latent_size,
        pixelnorm_eps=G.pixelnorm_eps,
        mbstd_group_size=D.mbstd_group_size,
        fmap={k: g.kwargs[k] for k in ("fmap_base", "fmap_decay", "fmap_max")},
    )


def is_official_pickle(path: str | os.PathLike) -> bool:
    """True when the file starts like a plain pickle (protocol 2+) rather than a torch zip checkpoint."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5
