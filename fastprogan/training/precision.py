"""The one place that decides numeric precision for training (DESIGN.md "Precision").

- ``fp32``: no autocast. What ``auto`` picks on CPUs without native bf16 and on GPUs without bf16.
- ``bf16``: autocast to bfloat16, no loss scaler (bf16 has fp32's exponent range). What ``auto`` picks
  on CUDA where ``torch.cuda.is_bf16_supported()``, and on CPUs with native bf16 arithmetic
  (AVX-512 BF16 or AMX-BF16, asked of torch's own CPU capability queries: :func:`cpu_has_native_bf16`).
  Elsewhere a CPU emulates bf16 (AVX2 converts to fp32 and back around every op): the same numerics,
  slower, so ``auto`` stays fp32 there. The issue that asked for this measured bf16 autocast at 2.0x
  fp32 at 16x16 and 2.5x at 32x32 on an AVX-512 BF16 CPU.
- ``fp16``: autocast to float16 with a dynamic loss scaler per optimiser (``torch.amp.GradScaler``,
  initial scale 2**6 and growth x2 every 2000 finite steps, like the official log2 scale +0.0005 per
  step), and pixel norm eps 1e-4 (1e-8 underflows in half precision).
Parameters stay fp32; minibatch stddev, pixel norm and all losses reduce in fp32 (the ops and
losses.py do that). TF32 matmuls/convs on Ampere+ only with ``allow_tf32``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from fastprogan.training.errors import ConfigError

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PrecisionPolicy:
    """How one run computes: the autocast dtype (None: fp32), loss scaling and pixel-norm eps."""

    name: str
    device_type: str
    autocast_dtype: torch.dtype | None
    use_loss_scaler: bool
    pixelnorm_eps: float

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context for forwards (a no-op for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def make_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled for fp16 only (a disabled one passes scale/step/update through)."""
        return torch.amp.GradScaler(
            self.device_type,
            init_scale=2.0**6,
            growth_factor=2.0,
            backoff_factor=0.5,
            growth_interval=2000,
            enabled=self.use_loss_scaler,
        )


def cpu_has_native_bf16() -> bool:
    """True where this CPU computes bf16 natively: AVX-512 BF16 or AMX-BF16 (torch's capability queries).

    ``torch.cpu.get_capabilities()`` (torch 2.13) names the ISA extensions; older torch (2.11) has the
    private ``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``. Each is guarded: a
    torch without any of them answers False (fp32, the safe choice).
    """
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        caps = get_capabilities()
        return bool(caps.get("avx512_bf16", False) or caps.get("amx_bf16", False))
    for query in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, query, None)
        if fn is not None and fn():
            return True
    return False


def default_precision(device: torch.device) -> str:
    """What ``auto`` picks: bf16 on CUDA devices and CPUs with native bf16, fp32 otherwise."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def describe_precision(requested: str, policy: PrecisionPolicy) -> str:
    """The run log's words for the precision: the resolved name, and why when ``auto`` chose it."""
    if requested != "auto":
        return policy.name
    if policy.device_type == "cpu":
        why = "this CPU has native bf16" if policy.name == "bf16" else "no native bf16 on this CPU"
    elif policy.device_type == "cuda":
        why = "CUDA with bf16" if policy.name == "bf16" else "this CUDA device has no bf16"
    else:
        why = f"device type {policy.device_type}"
    return f"{policy.name} (auto: {why})"


def resolve_precision(name: str, device: torch.device) -> PrecisionPolicy:
    """The policy for ``name`` ("auto", "fp32", "bf16", "fp16") on ``device``.

    The policy's ``name`` is the resolved precision (never "auto"): the run's log line, ``config.json``
    (``resolved_precision``) and every checkpoint's meta record it.
    """
    if name == "auto":
        name = default_precision(device)
    if name not in _DTYPES:
        raise ConfigError(f"precision must be one of auto, fp32, bf16, fp16; got {name!r}")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision bf16: this CUDA device does not support bfloat16; use fp16 or fp32")
    return PrecisionPolicy(
        name=name,
        device_type=device.type,
        autocast_dtype=_DTYPES[name],
        use_loss_scaler=name == "fp16",
        pixelnorm_eps=1e-4 if name == "fp16" else 1e-8,
    )


def configure_tf32(allow: bool) -> None:
    """TF32 for CUDA matmuls and cuDNN convs: off unless asked (fp32 comparisons stay exact)."""
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
