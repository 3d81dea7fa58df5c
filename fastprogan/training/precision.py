"""The one place that decides numeric precision for training (DESIGN.md "Precision").

- ``fp32``: no autocast. The CPU default, and the GPU default without bf16 support.
- ``bf16``: autocast to bfloat16, no loss scaler (bf16 has fp32's exponent range). The CUDA default
  where ``torch.cuda.is_bf16_supported()``.
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


def default_precision(device: torch.device) -> str:
    """bf16 on CUDA devices that support it, fp32 otherwise (CPU included)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def resolve_precision(name: str, device: torch.device) -> PrecisionPolicy:
    """The policy for ``name`` ("auto", "fp32", "bf16", "fp16") on ``device``."""
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
