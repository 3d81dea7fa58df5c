"""Errors the trainer raises on purpose; the CLI turns them into one clear line and exit code 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad setting (preset, resolution, precision, dataset, resume path ...): the message names it."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, truncated, unsafe to load); the message names the file."""


class NonFiniteError(RuntimeError):
    """A loss or a weight went NaN/Inf: the run stops and the last good checkpoint is kept."""
