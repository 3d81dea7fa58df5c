"""The fused-resampling weight: a 3x3 kernel turned into the 4x4 kernel of a stride-2 conv.

Nearest 2x upsampling followed by a 3x3 conv (pad 1) equals one stride-2 transposed conv whose 4x4
kernel is the sum of the 3x3 kernel zero-padded to 5x5 and taken at its four 4x4 shifts; a 3x3 conv
followed by 2x2 average pooling equals one stride-2 conv with the same sum times 0.25. Both do 16
instead of 36 multiply-adds per (input pixel x channel pair): 0.44x the FLOPs.

Construction: the sum of the four shifts is linear in the 3x3 kernel, so it is one GEMM of the
[A*B, 9] kernels with a constant [9, 16] 0/1 shift matrix (:func:`shift_matrix`, built on the device;
the flip of the transposed conv and the scale are folded into it). A GEMM has every derivative order
natively (its backward is the GEMM with the transposed matrix) and moves 9 + 16 elements per channel
pair. Measured interleaved for a 512x512 layer, fp32, 2 threads, on a shared 2-core machine
(``python benchmarks/bench_ops.py --weight-build --channels 512``; medians of 5, one process):

| construction | forward | forward+backward |
|---|---|---|
| box-filter conv2d over [C_out*C_in, 1, 3, 3] (before) | 1482 ms | 4006 ms |
| pad + four shifted slices (autograd's backward) | 452 ms | 1740 ms |
| this GEMM | 82 ms | 297 ms |

(absolute numbers drift 3x with the machine's load; the ratios, 18x and 13x, are the result).
Values equal the conv's up to fp32 rounding (fp64 within 1e-12:
tests/ops/test_resample_weight.py). With TF32 allowed on a GPU (``--allow-tf32``) the GEMM rounds
the kernel to TF32 as the conv itself then does.

Caching: inside :func:`fused_weight_cache` (meant to wrap one training step's forwards and
backward) the 4x4 weight built from one weight tensor is reused by later forwards of that scope,
so that the discriminator step's three forwards (reals, fakes, the penalty's mixed images) build it
once and accumulate into one autograd graph. It is served again only when all of these still hold:
the same tensor object (held by weak reference, so a recycled ``id`` cannot match), the same
``_version`` (an in-place update, such as a foreach/for-loop optimizer step, an EMA ``lerp_`` or
``load_state_dict``, bumps it), dtype, device, scale, grad mode and ``requires_grad``, inference mode,
and no backward has yet run through it (a tensor hook marks it used: after that its graph may be
freed). Fused optimizers (``Adam(fused=True)``) update parameters without bumping ``_version``
(measured, torch 2.13), so a scope must never contain an optimizer step; leaving the scope drops every
entry, so nothing outlives one step. Outside a scope nothing is cached. The cache is off while
``torch.compile`` traces and during CUDA graph capture. It hits only when the caller passes the same
tensor to every forward (for example the parameter itself, with the equalized-LR factor given as
``scale``); a freshly computed ``param * c`` is a new tensor each call and never hits.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch

_SHIFT_MATRICES: dict[tuple[torch.dtype, torch.device, float, bool], torch.Tensor] = {}


def shift_matrix(
    dtype: torch.dtype, device: torch.device, scale: float = 1.0, flip: bool = False
) -> torch.Tensor:
    """[9, 16]: row (i, j) of the 3x3 kernel adds ``scale`` to the 2x2 block at (i, j) of the 4x4 one.

    It is the Kronecker square of the 1-D map [3, 4] (tap i lands on outputs i and i + 1); ``flip``
    reverses the taps (the spatial flip a transposed conv needs) at no cost. Built with device-side
    ops only (no host-to-device copy, so it can run inside CUDA graph capture), and memoized per
    (dtype, device, scale, flip): a constant, so rebuilding it per call only cost dispatches (7 per
    resampling layer and pass; 30 of the 794 aten ops of a 16x16 iteration, ``python -m
    fastprogan.tools.dispatch``). Not memoized while a CUDA graph is being captured: a tensor made
    then holds its value only after a replay (the eager warm-up steps fill the memo first).
    """
    key = (dtype, torch.device(device), float(scale), bool(flip))
    memo = _SHIFT_MATRICES.get(key)
    if memo is not None:
        return memo
    m = _build_shift_matrix(dtype, device, scale, flip)
    capturing = torch.device(device).type == "cuda" and torch.cuda.is_current_stream_capturing()
    if not capturing and not torch.compiler.is_compiling():
        _SHIFT_MATRICES[key] = m
    return m


def _build_shift_matrix(dtype: torch.dtype, device: torch.device, scale: float, flip: bool) -> torch.Tensor:
    eye = torch.eye(3, 4, dtype=dtype, device=device)
    taps = eye + eye.roll(1, dims=1)  # [3, 4]: ones at (i, i) and (i, i + 1)
    if flip:
        taps = taps.flip(0)
    m = torch.kron(taps, taps)  # [9, 16]
    return m if scale == 1.0 else m * scale


def four_shift_sum(weight: torch.Tensor, scale: float = 1.0, flip: bool = False) -> torch.Tensor:
    """[A, B, 3, 3] -> [A, B, 4, 4]: ``scale`` x the sum of the padded kernel's 4 shifts (one GEMM).

    ``flip`` first flips the 3x3 kernel spatially (folded into the shift matrix).
    """
    if weight.ndim != 4 or tuple(weight.shape[-2:]) != (3, 3):
        raise ValueError(f"four_shift_sum: weight must be [A, B, 3, 3], got {tuple(weight.shape)}")
    a, b = weight.shape[:2]
    m = shift_matrix(weight.dtype, weight.device, scale, flip)  # [9, 16]
    # .contiguous().view: one copy where the layout needs it (a transposed kernel), never a hidden one
    return (weight.contiguous().view(a * b, 9) @ m).view(a, b, 4, 4)


def _build_upscale(weight: torch.Tensor, scale: float) -> torch.Tensor:
    # conv_transpose2d reads [C_in, C_out, 4, 4]: transposing the 3x3 kernel (9 elements per pair, not
    # 16) makes the GEMM write that layout directly; the flip is in the shift matrix.
    return four_shift_sum(weight.transpose(0, 1), scale, flip=True)  # [C_in, C_out, 4, 4]


def _build_downscale(weight: torch.Tensor, scale: float) -> torch.Tensor:
    return four_shift_sum(weight, 0.25 * scale)  # [C_out, C_in, 4, 4]


def upscale_conv_weight(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """3x3 conv weight [C_out, C_in, 3, 3] -> conv_transpose2d weight [C_in, C_out, 4, 4] (x ``scale``).

    PyTorch's transposed conv correlates with the spatially flipped kernel, so the 3x3 kernel is
    flipped (the box filter is symmetric, so flipping before or after the sum is the same).
    Served from :func:`fused_weight_cache` when one is active and the entry is still valid.
    """
    return _cached("up", weight, scale, _build_upscale)


def downscale_conv_weight(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """3x3 conv weight [C_out, C_in, 3, 3] -> stride-2 conv2d weight [C_out, C_in, 4, 4] (x0.25 x ``scale``).

    Served from :func:`fused_weight_cache` when one is active and the entry is still valid.
    """
    return _cached("down", weight, scale, _build_downscale)


# ---- the per-step cache ----------------------------------------------------------------------------


@dataclass
class _Entry:
    source: weakref.ref  # the weight tensor the value was built from
    key: tuple  # version, dtype, device, shape, scale, inference mode (needs_grad is in the slot)
    value: torch.Tensor  # [.., .., 4, 4]
    used_by_backward: bool = False


class _Store:
    """The entries of one active scope: at most one per (weight tensor, kind, needs_grad)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[int, str, bool], _Entry] = {}
        self.builds = 0  # constructions run in this scope (tests and benchmarks read it)
        self.hits = 0


class _Scopes(threading.local):
    """Per thread: a scope entered by one thread's training step never serves another thread."""

    def __init__(self) -> None:
        self.stack: list[_Store] = []


_SCOPES = _Scopes()


@contextlib.contextmanager
def fused_weight_cache() -> Iterator[_Store]:
    """Reuse each 4x4 fused weight across the forwards of one training step (module docstring).

    Nested scopes share the outermost store; leaving the outermost scope drops every entry. Never put
    an optimizer step inside: fused optimizers change parameters without bumping ``_version``.
    """
    stack = _SCOPES.stack
    if stack:
        yield stack[-1]
        return
    store = _Store()
    stack.append(store)
    try:
        yield store
    finally:
        stack.pop()
        store.entries.clear()


def _cache_disabled() -> bool:
    compiling = getattr(torch.compiler, "is_compiling", None)
    if compiling is not None and compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _drop(store: _Store, slot: tuple[int, str, bool]) -> None:
    # The source tensor died (e.g. a per-call ``param * c``): its value can never be served again.
    entry = store.entries.get(slot)
    if entry is not None and entry.source() is None:
        del store.entries[slot]


def _cached(kind: str, weight: torch.Tensor, scale: float, build) -> torch.Tensor:
    if _cache_disabled() or not _SCOPES.stack:  # is_compiling first: Dynamo never sees the scopes
        return build(weight, scale)
    if weight.is_inference():  # inference tensors keep no version counter: nothing proves freshness
        return build(weight, scale)
    store = _SCOPES.stack[-1]
    needs_grad = torch.is_grad_enabled() and weight.requires_grad
    slot = (id(weight), kind, needs_grad)
    key = (
        weight._version,
        weight.dtype,
        weight.device,
        tuple(weight.shape),
        float(scale),
        torch.is_inference_mode_enabled(),
    )
    entry = store.entries.get(slot)
    if entry is not None and entry.source() is weight and entry.key == key and not entry.used_by_backward:
        store.hits += 1
        return entry.value
    value = build(weight, scale)
    store.builds += 1
    entry = _Entry(weakref.ref(weight, lambda _, slot=slot: _drop(store, slot)), key, value)
    if value.requires_grad:
        # The first backward through the value may free its graph: never serve it after that.
        def mark_used(grad: torch.Tensor, entry: _Entry = entry) -> None:
            entry.used_by_backward = True

        value.register_hook(mark_used)
    store.entries[slot] = entry
    return value
