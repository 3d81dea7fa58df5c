"""Reading a finished dataset: memory-mapped levels, the manifest, and verification."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from fastprogan.data.create import FORMAT, MANIFEST, level_filename, sha256_file
from fastprogan.data.errors import DatasetError
from fastprogan.data.pyramid import build_pyramid, resolutions_for


def _load_manifest(path: Path) -> dict[str, Any]:
    if path.name.endswith(".partial"):
        raise DatasetError(f"{path}: an unfinished build; rerun `fastprogan dataset create` to complete it")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise DatasetError(f"{mpath}: missing; {path} is not a finished fastprogan dataset")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{mpath}: unreadable manifest ({exc})") from None
    required = ("format", "count", "resolutions", "channels", "files", "images")
    missing = [k for k in required if k not in manifest]
    if manifest.get("format") != FORMAT or missing:
        raise DatasetError(f"{mpath}: not a {FORMAT} manifest (missing {missing or 'format'})")
    if manifest["resolutions"] != resolutions_for(max(manifest["resolutions"])):
        raise DatasetError(f"{mpath}: resolutions {manifest['resolutions']} are not 4, 8, ..., R")
    if len(manifest["images"]) != manifest["count"]:
        raise DatasetError(f"{mpath}: count {manifest['count']} != {len(manifest['images'])} image entries")
    return manifest


class ShardedDataset:
    """A finished dataset: one memory-mapped uint8 array [N, C, R, R] per resolution."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest: dict[str, Any] = _load_manifest(self.path)
        self.num_images: int = int(self.manifest["count"])
        self.channels: int = int(self.manifest["channels"])
        self.resolutions: list[int] = sorted(int(r) for r in self.manifest["resolutions"])
        self.max_resolution: int = self.resolutions[-1]
        self._arrays: dict[int, np.ndarray] = {}

    def images(self, resolution: int) -> np.ndarray:
        """Memory-mapped, read-only uint8 [N, C, resolution, resolution]."""
        if resolution not in self.resolutions:
            raise DatasetError(f"{self.path}: no level at resolution {resolution}; has {self.resolutions}")
        if resolution not in self._arrays:
            file = self.path / level_filename(resolution)
            try:
                arr = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{file}: cannot open level file ({exc})") from None
            expected = (self.num_images, self.channels, resolution, resolution)
            if arr.dtype != np.uint8 or arr.shape != expected:
                raise DatasetError(f"{file}: holds {arr.dtype} {arr.shape}, manifest says uint8 {expected}")
            self._arrays[resolution] = arr
        return self._arrays[resolution]

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        return (
            f"ShardedDataset({str(self.path)!r}, num_images={self.num_images}, "
            f"channels={self.channels}, resolutions={self.resolutions})"
        )


def open_dataset(path: str | os.PathLike) -> ShardedDataset:
    """Open a dataset directory made by ``fastprogan dataset create`` (reads only the manifest)."""
    return ShardedDataset(path)


def verify_dataset(path: str | os.PathLike, *, deep: bool = False, block: int = 256) -> list[str]:
    """Every problem found, as messages naming the file; an empty list means the dataset is sound.

    Checks the manifest, each level file's shape, dtype and sha256, and each top-level image's
    sha256. ``deep`` also recomputes every lower level from the top one (the float box pyramid).
    """
    try:
        ds = open_dataset(path)
    except DatasetError as exc:
        return [str(exc)]
    problems: list[str] = []
    files = ds.manifest["files"]
    for r in ds.resolutions:
        entry = files.get(str(r))
        file = ds.path / level_filename(r)
        if entry is None or entry.get("path") != level_filename(r):
            problems.append(f"{ds.path / MANIFEST}: no file entry for resolution {r}")
            continue
        if not file.is_file():
            problems.append(f"{file}: missing")
            continue
        try:
            ds.images(r)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        if sha256_file(file) != entry.get("sha256"):
            problems.append(f"{file}: sha256 does not match the manifest (the file was modified or damaged)")
    if problems:
        return problems
    top = ds.images(ds.max_resolution)  # [N, C, R, R]
    names = ds.manifest["images"]
    step = max(1, block * 4096 // top[0].nbytes)
    for start in range(0, ds.num_images, step):
        chunk = np.asarray(top[start : start + step])
        for i, img in enumerate(chunk):
            if hashlib.sha256(img.tobytes()).hexdigest() != names[start + i]["sha256"]:
                problems.append(
                    f"{ds.path / level_filename(ds.max_resolution)}: image {start + i} "
                    f"({names[start + i]['name']}) does not match its sha256"
                )
        if deep:
            for r, level in build_pyramid(chunk).items():
                if not np.array_equal(level, ds.images(r)[start : start + len(chunk)]):
                    problems.append(
                        f"{ds.path / level_filename(r)}: images {start}..{start + len(chunk) - 1} "
                        "differ from the box pyramid of the top level"
                    )
    return problems
