"""Where images come from: a folder tree, a .zip, or a uint8 .npy/.npz array.

A source lists its entries in a deterministic order (sorted relative paths, or array index order) and
reads one entry's raw payload: the encoded file bytes, or a uint8 array [H, W(, C)]. Decoding happens
elsewhere (``decode.py``) so it can run in worker processes.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from fastprogan.data.errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
ARRAY_EXTENSIONS = (".npy", ".npz")


def _is_hidden(rel: str) -> bool:
    # Dot files and macOS zip metadata are never images the user meant to include.
    parts = rel.split("/")
    return any(p.startswith(".") for p in parts) or parts[0] == "__MACOSX"


class Source:
    """The entries of one source, in a fixed order, and a reader for each."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.names: list[str] = []  # one per entry, unique, in source order
        self.ignored: list[str] = []  # files skipped because they are not images by extension
        self._fingerprint_parts: list[str] = []
        self._zip: zipfile.ZipFile | None = None
        self._array: np.ndarray | None = None  # [N, H, W(, C)] uint8
        if not self.path.exists():
            raise DatasetError(f"{self.path}: source does not exist")
        if self.path.is_dir():
            self.kind = "folder"
            self._list_folder()
        elif self.path.suffix.lower() == ".zip":
            self.kind = "zip"
            self._list_zip()
        elif self.path.suffix.lower() in ARRAY_EXTENSIONS:
            self.kind = "array"
            self._open_array()
        else:
            raise DatasetError(
                f"{self.path}: unsupported source; give a folder, a .zip, or a uint8 .npy/.npz array"
            )
        if not self.names:
            raise DatasetError(
                f"{self.path}: empty source, no images found"
                + (f" ({len(self.ignored)} non-image files ignored)" if self.ignored else "")
            )

    def __len__(self) -> int:
        return len(self.names)

    def _list_folder(self) -> None:
        found: list[tuple[str, Path]] = []
        for root, dirs, files in os.walk(self.path, followlinks=True):
            dirs.sort()
            for f in files:
                full = Path(root) / f
                rel = full.relative_to(self.path).as_posix()
                if _is_hidden(rel):
                    continue
                if full.suffix.lower() in IMAGE_EXTENSIONS:
                    found.append((rel, full))
                else:
                    self.ignored.append(rel)
        found.sort()
        self.ignored.sort()
        self.names = [rel for rel, _ in found]
        self._files = [full for _, full in found]
        for rel, full in found:
            st = full.stat()
            self._fingerprint_parts.append(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}")

    def _list_zip(self) -> None:
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"{self.path}: not a readable zip file ({exc})") from None
        infos = sorted((i for i in self._zip.infolist() if not i.is_dir()), key=lambda i: i.filename)
        for info in infos:
            if _is_hidden(info.filename):
                continue
            if Path(info.filename).suffix.lower() in IMAGE_EXTENSIONS:
                self.names.append(info.filename)
                self._fingerprint_parts.append(f"{info.filename}\0{info.file_size}\0{info.CRC}")
            else:
                self.ignored.append(info.filename)

    def _open_array(self) -> None:
        try:
            if self.path.suffix.lower() == ".npy":
                arr = np.load(self.path, mmap_mode="r")
            else:
                with np.load(self.path) as npz:
                    keys = list(npz.keys())
                    key = keys[0] if len(keys) == 1 else "images" if "images" in keys else None
                    if key is None:
                        raise DatasetError(
                            f"{self.path}: .npz holds {keys}; name the image array 'images' or store only one"
                        )
                    arr = npz[key]
        except DatasetError:
            raise
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{self.path}: not a readable numpy array file ({exc})") from None
        if arr.dtype != np.uint8:
            raise DatasetError(f"{self.path}: array dtype is {arr.dtype}, expected uint8")
        if arr.ndim == 4 and arr.shape[3] == 1:
            arr = arr[..., 0]
        if not (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[3] in (3, 4))):
            raise DatasetError(
                f"{self.path}: array shape {arr.shape}, expected [N, H, W] or [N, H, W, C] with C in 1, 3, 4"
            )
        self._array = arr
        width = len(str(max(len(arr) - 1, 0)))
        self.names = [f"{self.path.name}[{i:0{width}d}]" for i in range(len(arr))]
        st = self.path.stat()
        self._fingerprint_parts.append(f"{self.path.name}\0{arr.shape}\0{st.st_size}\0{st.st_mtime_ns}")

    def read(self, index: int) -> bytes | np.ndarray:
        """The raw payload of entry ``index``: encoded bytes, or a uint8 array [H, W(, C)]."""
        name = self.names[index]
        try:
            if self.kind == "folder":
                return self._files[index].read_bytes()
            if self.kind == "zip":
                assert self._zip is not None
                return self._zip.read(name)
        except (OSError, zipfile.BadZipFile, RuntimeError) as exc:
            raise DatasetError(f"{name}: cannot read file ({exc})") from None
        assert self._array is not None
        return np.ascontiguousarray(self._array[index])

    def fingerprint(self) -> str:
        """A digest of the entry names and sizes: a resumed build must see the same source."""
        return hashlib.sha256("\n".join(self._fingerprint_parts).encode()).hexdigest()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
