"""One way to write a run's files atomically: a temporary ``.<name>.tmp-<pid>`` in the same directory,
then ``os.replace`` onto the final name, so a reader (or a crash, kill -9 or full disk) sees the old file
or the new one, never half of one, and no temporary file is left behind by a failed write."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from fastprogan.training.errors import output_error


def temporary_path(final: Path) -> Path:
    """Where ``final`` is written before the rename (``.tmp-`` files are what stale-temp cleanup removes)."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        with contextlib.suppress(OSError):  # a directory fsync some filesystems refuse: best effort
            os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    final: str | os.PathLike, write: Callable[[Path], None], *, durable: bool = False
) -> Path:
    """Call ``write(tmp)`` to write the file's bytes to a temporary path, then rename it onto ``final``.

    ``durable``: fsync the file before the rename and the directory after it (checkpoints: the rename is
    then on disk too). Any failure removes the temporary file; an OSError (full disk, unwritable
    directory) is raised as OutputError naming ``final`` and the fix; so is torch.save's RuntimeError for
    a failed write (its zip writer reports e.g. ENOSPC that way).
    """
    final = Path(final)
    tmp = temporary_path(final)
    try:
        write(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise output_error(final, exc) from None
        if isinstance(exc, RuntimeError) and "write" in str(exc).lower():
            raise output_error(final, OSError(0, str(exc).splitlines()[0])) from None
        raise
    if durable:
        _fsync_dir(final.parent)
    return final
