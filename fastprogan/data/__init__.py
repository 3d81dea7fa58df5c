"""Datasets for fastprogan: build sharded uint8 pyramids, load them fast, prepare reals.

Public API (loaded lazily, so ``import fastprogan.data`` and the CLI stay light)::

    create_dataset(source, out, resolution, ...) -> Path         # fastprogan dataset create
    open_dataset(path) -> ShardedDataset                          # memory-mapped levels
    verify_dataset(path, deep=False) -> list[str]                 # problems found
    ImageLoader(dataset, resolution, batch_size, *, seed, rank, world_size, num_workers,
                pin_memory, drop_last, start)                     # endless uint8 [B, C, R, R]
    prepare_reals(batch_uint8, device, *, mirror, generator, dtype) -> Tensor in [-1, 1]
    fade_reals(x, alpha) -> Tensor
    default_dataset_source() -> Path; materialize_default_dataset(out_dir) -> Path
    DatasetError
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DatasetError": "fastprogan.data.errors",
    "create_dataset": "fastprogan.data.create",
    "open_dataset": "fastprogan.data.shards",
    "ShardedDataset": "fastprogan.data.shards",
    "verify_dataset": "fastprogan.data.shards",
    "ImageLoader": "fastprogan.data.loader",
    "prepare_reals": "fastprogan.data.reals",
    "fade_reals": "fastprogan.data.reals",
    "default_dataset_source": "fastprogan.data.default",
    "materialize_default_dataset": "fastprogan.data.default",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastprogan.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
