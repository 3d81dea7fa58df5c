"""Argument checks and implementation choice shared by every op in ``fastprogan.ops``.

Every public op validates its arguments here before any kernel launch, and picks its implementation
with :func:`resolve_impl`. A requested implementation that cannot run raises with the reason; nothing
falls back silently.
"""

from __future__ import annotations

import torch

IMPLS = ("auto", "ref", "triton")


def check_tensor(
    name: str, x: object, *, ndims: tuple[int, ...] = (4,), floating: bool = True
) -> torch.Tensor:
    """Raise TypeError/ValueError naming ``name`` unless ``x`` is a tensor of an allowed rank/dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)}")
    return x


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """Raise ValueError naming the arguments when the given tensors live on different devices."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{name} is on {t.device} but {first_name} is on {first.device}; move both to one device"
            )


def check_channels(name: str, t: torch.Tensor, channels: int, what: str) -> None:
    if t.ndim != 1 or t.shape[0] != channels:
        raise ValueError(f"{name} must have shape [{channels}] ({what}), got {tuple(t.shape)}")


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why Triton kernels cannot run on ``device`` here, or None when they can."""
    import os

    try:
        import triton  # noqa: F401
    except ImportError:
        return "Triton is not installed (pip install triton; Linux x86_64 only)"
    if device.type == "cuda":
        return None
    if device.type == "meta":
        return None  # shape-only tensors: the ops' fake implementations run, no kernel launches
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return (
        f"Triton kernels run on CUDA tensors (or on CPU under TRITON_INTERPRET=1); got a {device.type} tensor"
    )


KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def kernel_dtype_ok(x: torch.Tensor) -> bool:
    """Whether the Triton kernels take x's dtype on x's device: fp32/fp16/bf16 everywhere (the dtypes
    the static GPU check compiles), fp64 only off CUDA (the interpreter, for gradcheck)."""
    return x.dtype in KERNEL_DTYPES or (x.dtype == torch.float64 and x.device.type != "cuda")


def resolve_impl(
    op: str, impl: str, x: torch.Tensor, *, has_triton: bool, kernel_dtype_ok: bool = True
) -> str:
    """Return "ref" or "triton" for ``impl`` in ("auto", "ref", "triton"), or raise with the reason.

    "auto" means Triton on CUDA tensors and the reference elsewhere; an op without a Triton kernel
    (``has_triton=False``) always runs its reference, and so does "auto" for a dtype the kernels are
    not built for (``kernel_dtype_ok=False``, e.g. fp64 on CUDA), where "triton" raises.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "ref":
        return "ref"
    if not has_triton:
        if impl == "triton":
            raise RuntimeError(f"{op}: impl='triton' requested, but {op} has no Triton kernel")
        return "ref"
    if impl == "auto" and (x.device.type != "cuda" or not kernel_dtype_ok):
        return "ref"
    if not kernel_dtype_ok:
        raise RuntimeError(
            f"{op}: impl='triton' cannot run: the kernels are built for {[str(d) for d in KERNEL_DTYPES]} "
            f"on {x.device.type} (fp64 only under the interpreter), got {x.dtype}. Pass impl='ref'."
        )
    reason = triton_unavailable_reason(x.device)
    if reason is not None:
        raise RuntimeError(f"{op}: impl={impl!r} cannot run: {reason}. Pass impl='ref' to use PyTorch ops.")
    return "triton"


def reduction_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision policy for reductions (pixel norm, minibatch stddev): at least fp32, fp64 kept."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dense_format(x: torch.Tensor) -> torch.memory_format:
    """The layout the Triton kernels give x's outputs: channels_last if x is channels_last-dense (and not
    also NCHW-contiguous), else NCHW (any other view is copied to NCHW first)."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def empty_like_dense(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``empty_like(x)`` in :func:`dense_format` (the fake implementations' outputs)."""
    return torch.empty_like(x, dtype=dtype, memory_format=dense_format(x))
