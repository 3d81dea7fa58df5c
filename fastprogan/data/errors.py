"""The one exception type of the datasets package."""

from __future__ import annotations


class DatasetError(ValueError):
    """A problem with a dataset's source, options or files.

    The message names the file (or directory) and the problem; the CLI prints it without a traceback
    and exits with status 2.
    """


class CorruptImageError(DatasetError):
    """An image whose bytes do not match its checksum in the manifest (raised by the loader).

    ``index`` is the image's index in the dataset, ``file`` the level file it was read from; the
    message names both and the fix.
    """

    def __init__(self, message: str, *, index: int, file: object) -> None:
        super().__init__(message)
        self.index = index
        self.file = file
