"""The embedded quick-start dataset: 1,797 real handwritten digits, shipped inside the package.

``digits16.npz`` holds ``images``: uint8 [1797, 16, 16], the UCI "Optical Recognition of Handwritten
Digits" scans as bundled with scikit-learn (``load_digits``, 8x8, 17 gray levels, CC BY 4.0), scaled
to 0..255 and upscaled 8x8 -> 16x16 with Pillow bicubic; and ``labels``: uint8 [1797]. It was made
once by ``make_default.py`` (not run at import). See LICENSE.md here for attribution.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

NPZ_NAME = "digits16.npz"


def default_dataset_source() -> Path:
    """Path of the embedded uint8 [1797, 16, 16] digits array (a source for ``create_dataset``)."""
    path = Path(str(resources.files(__name__).joinpath(NPZ_NAME)))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the embedded default dataset is missing from this install")
    return path


def materialize_default_dataset(
    out_dir: str | os.PathLike, *, resolution: int = 16, channels: int = 1, progress: bool = False
) -> Path:
    """Build the default dataset under ``out_dir`` (once) and return its path.

    Uses the same ``create_dataset`` code path as the CLI. The result is ``out_dir/digits_r{R}_c{C}``;
    an existing finished dataset there is reused as is. ``resolution`` is at most 16 (the stored size);
    ``channels=3`` replicates the gray level.
    """
    from fastprogan.data.create import create_dataset
    from fastprogan.data.errors import DatasetError
    from fastprogan.data.shards import open_dataset

    out = Path(out_dir) / f"digits_r{resolution}_c{channels}"
    if out.exists():
        try:
            if open_dataset(out).has_checksums:
                return out
            # Built before per-image checksums existed: rebuilding is cheaper than rehashing.
        except DatasetError:
            pass  # damaged or foreign: rebuild below, replacing it only once the new one is complete
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return create_dataset(
        default_dataset_source(),
        out,
        resolution,
        channels=channels,
        overwrite=out.exists(),
        progress=progress,
        log=lambda _msg: None,
    )
