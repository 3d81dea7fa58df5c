"""Errors the trainer raises on purpose; the CLI turns them into one clear line and exit code 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad setting (preset, resolution, precision, dataset, resume path ...): the message names it."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, truncated, unsafe to load); the message names the file."""


class OutputError(RuntimeError):
    """A run file could not be written (unwritable directory, full disk): the message names the file
    and the fix. Nothing half-written is left behind (temporary files are removed)."""


class NonFiniteError(RuntimeError):
    """A loss or a weight went NaN/Inf: the run stops and the last good checkpoint is kept."""


class Interrupted(RuntimeError):
    """The run stopped on a signal (SIGTERM) after writing a checkpoint; ``exit_code`` is 128 + signal."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def describe_os_error(exc: OSError) -> str:
    """``"No space left on device"`` and the like, without the errno prefix noise."""
    return exc.strerror or str(exc) or type(exc).__name__


def output_error(path: object, exc: OSError, *, doing: str = "write") -> OutputError:
    """An OutputError for a failed write of ``path``: names the file, the cause and the fix."""
    import errno

    reason = describe_os_error(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space on that disk (or use another --out), then rerun with --resume latest"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the directory writable or pass another --out"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a path component is a file, not a directory: pass another --out"
    else:
        fix = "check the output directory (--out)"
    return OutputError(f"cannot {doing} {path}: {reason}; {fix}")
