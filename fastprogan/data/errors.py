"""The one exception type of the datasets package."""

from __future__ import annotations


class DatasetError(ValueError):
    """A problem with a dataset's source, options or files.

    The message names the file (or directory) and the problem; the CLI prints it without a traceback
    and exits with status 2.
    """
