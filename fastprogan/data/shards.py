"""Reading a finished dataset: memory-mapped levels, the manifest, and verification."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from fastprogan.data.checksums import HASH_NAME, VerifiedLevel, decode_hashes, encode_hashes, level_hashes
from fastprogan.data.create import (
    CHECKSUM_TEXT,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    level_filename,
    sha256_file,
    write_json,
)
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


def rebuild_hint(path: Path, manifest: dict[str, Any]) -> str:
    """The fix for a damaged level file: the command that rebuilds the dataset from its source."""
    src = manifest.get("source", {}).get("path")
    res = max(manifest["resolutions"])
    return f"rebuild the dataset: fastprogan dataset create {src or 'SOURCE'} {path} --resolution {res} --overwrite"


def level_file_problems(path: Path, manifest: dict[str, Any]) -> list[str]:
    """Cheap checks of every level file the manifest lists (no pixel data is read): the file exists,
    its .npy header parses, holds uint8 [N, C, r, r] in C order, and the file is exactly as long as
    that header says. One message per problem, naming the file and the fix."""
    hint = rebuild_hint(path, manifest)
    count, channels = int(manifest["count"]), int(manifest["channels"])
    files = manifest["files"] if isinstance(manifest["files"], dict) else {}
    problems = []
    for r in sorted(int(r) for r in manifest["resolutions"]):
        file = path / level_filename(r)
        entry = files.get(str(r))
        if not isinstance(entry, dict) or entry.get("path") != level_filename(r):
            problems.append(f"{path / MANIFEST}: no file entry for resolution {r}; {hint}")
            continue
        if not file.is_file():
            problems.append(f"{file}: missing: the dataset lacks its {r}x{r} level; {hint}")
            continue
        expected = (count, channels, r, r)
        try:
            with open(file, "rb") as f:
                major, _ = np.lib.format.read_magic(f)
                if major == 1:
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif major == 2:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy format version {major}")
                data_start = f.tell()
                size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            problems.append(f"{file}: cannot read ({exc.strerror or exc}); {hint}")
            continue
        except (ValueError, SyntaxError, EOFError, TypeError) as exc:
            problems.append(f"{file}: corrupt .npy header ({str(exc).splitlines()[0]}); {hint}")
            continue
        if dtype != np.uint8 or tuple(shape) != expected or fortran:
            order = " (Fortran order)" if fortran else ""
            problems.append(
                f"{file}: holds {dtype} {tuple(shape)}{order}, the manifest says uint8 {expected}; {hint}"
            )
            continue
        need = data_start + math.prod(expected)
        if size < need:
            problems.append(
                f"{file}: truncated: {size} bytes, its header's shape {expected} needs {need}; {hint}"
            )
        elif size > need:
            problems.append(f"{file}: {size - need} bytes longer than its shape {expected} needs; {hint}")
    return problems


class ShardedDataset:
    """A finished dataset: one memory-mapped uint8 array [N, C, R, R] per resolution.

    Opening checks the manifest and every level file cheaply (present, header, dtype, shape, size:
    ``level_file_problems``), so a missing, truncated or corrupt level raises DatasetError here, when
    the dataset is opened, not when training first reaches that resolution. ``check_files=False``
    skips those checks (``verify_dataset`` runs them itself to report every problem).
    """

    def __init__(self, path: str | os.PathLike, *, check_files: bool = True) -> None:
        self.path = Path(path)
        self.manifest: dict[str, Any] = _load_manifest(self.path)
        self.num_images: int = int(self.manifest["count"])
        self.channels: int = int(self.manifest["channels"])
        self.resolutions: list[int] = sorted(int(r) for r in self.manifest["resolutions"])
        self.max_resolution: int = self.resolutions[-1]
        self._arrays: dict[int, np.ndarray] = {}
        self._verified: dict[int, VerifiedLevel] = {}
        if check_files:
            problems = level_file_problems(self.path, self.manifest)
            if problems:
                more = len(problems) - 1
                suffix = f" (and {more} more: fastprogan dataset verify {self.path})" if more else ""
                raise DatasetError(problems[0] + suffix)

    @property
    def has_checksums(self) -> bool:
        """Whether every level carries per-image xxh3_64 checksums (datasets of format version >= 2)."""
        return all(HASH_NAME in self.manifest["files"].get(str(r), {}) for r in self.resolutions)

    def image_hashes(self, resolution: int) -> np.ndarray:
        """The manifest's xxh3_64 of each image at ``resolution``: uint64 [N]."""
        entry = self.manifest["files"].get(str(resolution), {})
        if HASH_NAME not in entry:
            raise DatasetError(
                f"{self.path / MANIFEST}: no per-image {HASH_NAME} checksums for the {resolution}px level "
                f"(a dataset made before they existed); add them with `fastprogan dataset verify "
                f"{self.path} --rehash`, or train without checking (--no-verify-data)"
            )
        try:
            return decode_hashes(
                entry[HASH_NAME], self.num_images, f"{self.path / MANIFEST} files[{resolution}]"
            )
        except ValueError as exc:
            raise DatasetError(f"{exc}; rerun `fastprogan dataset verify {self.path} --rehash`") from None

    def verified(self, resolution: int) -> VerifiedLevel:
        """This process's record of which images of ``resolution`` were checked (shared by loaders)."""
        if resolution not in self._verified:
            self._verified[resolution] = VerifiedLevel(self.image_hashes(resolution))
        return self._verified[resolution]

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
    """Open a dataset directory made by ``fastprogan dataset create``.

    Reads the manifest and each level file's .npy header (no pixel data); raises DatasetError naming
    the file and the fix if the manifest is unreadable or a level is missing, truncated or corrupt.
    """
    return ShardedDataset(path)


# Mismatching images reported per level by verify (the count of the rest is given).
_MAX_LISTED = 10


def verify_dataset(
    path: str | os.PathLike, *, deep: bool = False, block: int = 256, rehash: bool = False
) -> list[str]:
    """Every problem found, as messages naming the file; an empty list means the dataset is sound.

    Checks the manifest, each level file's header, shape, dtype, size and sha256, each top-level
    image's sha256, and each image's xxh3_64 at every level. ``deep`` also recomputes every lower
    level from the top one (the float box pyramid). ``rehash`` (the upgrade path for datasets made
    before per-level checksums existed): once everything else checks out, (re)computes the per-image
    xxh3_64 of every level and writes them into the manifest (atomically), keeping the sha256 entries;
    nothing is written if any problem is found.
    """
    try:
        ds = ShardedDataset(path, check_files=False)
    except DatasetError as exc:
        return [str(exc)]
    problems = level_file_problems(ds.path, ds.manifest)
    if problems:
        return problems
    files = ds.manifest["files"]
    for r in ds.resolutions:
        file = ds.path / level_filename(r)
        if sha256_file(file) != files[str(r)].get("sha256"):
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
    hashes = {r: level_hashes(ds.images(r)) for r in ds.resolutions}  # uint64 [N] per level
    if not rehash:
        if not ds.has_checksums:
            problems.append(
                f"{ds.path / MANIFEST}: no per-image {HASH_NAME} checksums (a dataset made before they "
                f"existed; the loader needs them): add them with `fastprogan dataset verify {ds.path} --rehash`"
            )
        else:
            for r in ds.resolutions:
                try:
                    expected = ds.image_hashes(r)
                except DatasetError as exc:
                    problems.append(str(exc))
                    continue
                bad = np.flatnonzero(hashes[r] != expected)
                if len(bad):
                    listed = ", ".join(str(i) for i in bad[:_MAX_LISTED])
                    more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
                    problems.append(
                        f"{ds.path / level_filename(r)}: image(s) {listed}{more} do not match their "
                        f"{HASH_NAME} (the pixel data was modified or damaged)"
                    )
    if rehash and not problems:
        manifest = dict(ds.manifest)
        manifest["files"] = {k: dict(v) for k, v in manifest["files"].items()}
        for r in ds.resolutions:
            manifest["files"][str(r)][HASH_NAME] = encode_hashes(hashes[r])
        manifest["format_version"] = max(int(manifest.get("format_version", 1)), FORMAT_VERSION)
        manifest["checksum"] = CHECKSUM_TEXT
        write_json(ds.path / MANIFEST, manifest)
    return problems
