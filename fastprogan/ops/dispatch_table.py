"""Per-device dispatch tables: the per-shape choices of ``impl="auto"``, measured on a GPU.

``fastprogan bench`` times every candidate of every per-shape choice (the resampling conv paths, the
fused conv kernels) on the device it runs on and writes ``dispatch_table.json``. Commit that file as
``fastprogan/ops/dispatch_tables/<device slug>.json`` (shipped in the wheel) and ``impl="auto"`` on a
device of that name follows it; without a table the ops use their roofline models, as before.

Format (JSON)::

    {"format": 1, "device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "triton": "3.6.0",
     "entries": {"upscale_conv2d": {"<shape key>": "fused", ...}, "conv2d_bias_act": {...}}}

Shape keys come from :func:`shape_key` (sorted ``name=value`` pairs), so the writer (the bench) and the
readers (the ops) agree by construction. ``FASTPROGAN_DISPATCH_TABLE=PATH`` loads that file instead of
the packaged one (``off`` disables tables). A corrupt table, or one written on another device, gives a
:class:`DispatchTableWarning` naming the file and the ops keep their roofline choice.

Lookups are a dict access after the first call per device, and read no tensor values (capture-safe).
"""

from __future__ import annotations

import functools
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
TABLES_DIR = Path(__file__).resolve().parent / "dispatch_tables"
ENV_VAR = "FASTPROGAN_DISPATCH_TABLE"


class DispatchTableWarning(UserWarning):
    """A dispatch table could not be used (corrupt, wrong format, or measured on another device)."""


def device_slug(name: str) -> str:
    """File-name form of a device name: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def shape_key(**dims: Any) -> str:
    """The key of one shape in a table: sorted ``name=value`` pairs; dtypes by their short name."""
    parts = []
    for name in sorted(dims):
        value = dims[name]
        if isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        elif isinstance(value, bool):
            value = int(value)
        parts.append(f"{name}={value}")
    return ",".join(parts)


def validate_table(table: object, source: str) -> dict[str, dict[str, str]]:
    """Return ``table["entries"]`` or raise ValueError naming what is wrong in ``source``."""
    if not isinstance(table, dict):
        raise ValueError(f"{source}: a dispatch table is a JSON object, got {type(table).__name__}")
    if table.get("format") != FORMAT_VERSION:
        raise ValueError(f"{source}: format {table.get('format')!r}, expected {FORMAT_VERSION}")
    if not isinstance(table.get("device"), str):
        raise ValueError(f"{source}: 'device' must be the device name string")
    entries = table.get("entries")
    if not isinstance(entries, dict):
        raise ValueError(f"{source}: 'entries' must be an object of op -> {{shape key: choice}}")
    for op, choices in entries.items():
        if not isinstance(choices, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in choices.items()
        ):
            raise ValueError(f"{source}: entries[{op!r}] must map shape keys to choice names")
    return entries


def load_table(path: Path, device_name: str) -> dict[str, dict[str, str]] | None:
    """The entries of the table at ``path`` for ``device_name``, or None (with a warning) if unusable."""
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = validate_table(table, str(path))
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        warnings.warn(
            f"dispatch table {path} is unusable ({exc}); impl='auto' uses its roofline model",
            DispatchTableWarning,
            stacklevel=3,
        )
        return None
    if device_slug(table["device"]) != device_slug(device_name):
        warnings.warn(
            f"dispatch table {path} was measured on {table['device']!r}, not on this device "
            f"({device_name!r}); impl='auto' uses its roofline model",
            DispatchTableWarning,
            stacklevel=3,
        )
        return None
    return entries


def table_path_for(device_name: str) -> Path | None:
    """The table ``impl="auto"`` reads for ``device_name``: the env override, else the packaged file."""
    override = os.environ.get(ENV_VAR)
    if override:
        return None if override.lower() == "off" else Path(override)
    path = TABLES_DIR / f"{device_slug(device_name)}.json"
    return path if path.is_file() else None


_cache: dict[tuple[str, str | None], dict[str, dict[str, str]] | None] = {}


@functools.cache
def _cuda_device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def _device_name(device: torch.device) -> str | None:
    """The CUDA device's name (queried once per device index: ``auto`` asks on every call), or None
    where no CUDA device can be queried (a CPU-only build)."""
    if not torch.cuda.is_available():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _cuda_device_name(index)


def entries_for(device_name: str) -> dict[str, dict[str, str]] | None:
    """All entries of the table for ``device_name`` (cached), or None when there is no usable one."""
    cache_key = (device_name, os.environ.get(ENV_VAR))
    if cache_key not in _cache:
        path = table_path_for(device_name)
        _cache[cache_key] = None if path is None else load_table(path, device_name)
    return _cache[cache_key]


def lookup(op: str, key: str, device: torch.device) -> str | None:
    """The measured winner for ``op`` at shape ``key`` on ``device``, or None (use the roofline).

    Only CUDA devices have tables; every other device returns None.
    """
    if device.type != "cuda":
        return None
    name = _device_name(device)
    entries = None if name is None else entries_for(name)
    if entries is None:
        return None
    return entries.get(op, {}).get(key)


_warned_choices: set[tuple[str, str, str]] = set()


def measured_choice(op: str, device: torch.device | str, choices: tuple[str, ...], **dims: Any) -> str | None:
    """The table's choice for ``op`` at the shape ``dims`` (see :func:`shape_key`) on ``device``, or None.

    None means "use the roofline model": not a CUDA device, no usable table, no entry for this shape,
    or an entry that is not one of ``choices`` (a :class:`DispatchTableWarning`, once per entry).
    ``device`` may be a device-type string ("cuda" means the current CUDA device).
    """
    device = torch.device(device) if isinstance(device, str) else device
    key = shape_key(**dims)
    choice = lookup(op, key, device)
    if choice is None or choice in choices:
        return choice
    if (op, key, choice) not in _warned_choices:
        _warned_choices.add((op, key, choice))
        warnings.warn(
            f"dispatch table entry {op}[{key}] = {choice!r} is not one of {choices}; "
            "impl='auto' uses its roofline model",
            DispatchTableWarning,
            stacklevel=3,
        )
    return None


def measured_conv_choice(
    op: str,
    device: torch.device | str,
    choices: tuple[str, ...],
    n: int,
    c_in: int,
    c_out: int,
    h: int,
    w: int,
    dtype: torch.dtype,
    backward: bool,
) -> str | None:
    """:func:`measured_choice` for a conv op keyed by its input shape [n, c_in, h, w], c_out, dtype and
    whether a backward follows (the key every resampling conv's table uses)."""
    return measured_choice(
        op, device, choices, n=n, c_in=c_in, c_out=c_out, h=h, w=w, dtype=dtype, backward=backward
    )


def clear_cache() -> None:
    """Forget loaded tables (tests, or after writing a new table in-process)."""
    _cache.clear()
    _warned_choices.clear()
