"""Build a sharded dataset: one memory-mappable uint8 .npy per resolution plus manifest.json.

Layout of a finished dataset directory::

    OUT/manifest.json     count, resolutions, channels, order, per-image name + sha256, per-level
                          per-image xxh3_64 (checked by the loader), options...
    OUT/res_0004.npy      uint8 [N, C, 4, 4]
    ...
    OUT/res_RRRR.npy      uint8 [N, C, R, R]

The build is atomic and resumable. Everything is written into ``OUT.partial/``: decoded top-level
images go to chunk files (``chunks/chunk_00000.npy`` + ``.json``, each renamed into place when
complete), then the pyramid files and the manifest are assembled from the chunks, and only then is
``OUT.partial`` renamed to ``OUT``. An interrupted run leaves only ``OUT.partial``; rerunning the same
command reuses its completed chunks (``.progress.json`` records the options and a source fingerprint;
a partial build made with other options or another source is discarded).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import fastprogan
from fastprogan.data.checksums import HASH_NAME, encode_hashes, level_hashes
from fastprogan.data.decode import TRANSFORMS, decode_task
from fastprogan.data.errors import DatasetError
from fastprogan.data.pyramid import build_pyramid, resolutions_for
from fastprogan.data.sources import Source

FORMAT = "fastprogan-dataset"
# 2: every level's entry in "files" carries "xxh3_64", the per-image checksums the loader verifies
# (version 1 datasets are upgraded in place by `fastprogan dataset verify --rehash`).
FORMAT_VERSION = 2
CHECKSUM_TEXT = (
    "sha256 of each top-level image's uint8 [C, R, R] bytes; sha256 of each file; "
    "xxh3_64 of each image's uint8 [C, r, r] bytes at every level (files[r].xxh3_64: 16 hex digits "
    "per image, big-endian, in dataset order)"
)
MANIFEST = "manifest.json"
PROGRESS = ".progress.json"
CHUNK_BYTES = 32 << 20  # top-level bytes per chunk: bounds memory and the work lost on interruption
PYRAMID_BYTES = 8 << 20  # top-level bytes per pyramid step: its float32 copy is 4x this


def level_filename(resolution: int) -> str:
    return f"res_{resolution:04d}.npy"


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def sha256_file(path: Path, block: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (a tmp file renamed over ``path``)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: leave the old file, not a half-written tmp
        raise


def _write_chunk(chunk_dir: Path, index: int, images: np.ndarray, record: dict) -> None:
    """Chunk ``index``: its images [n, C, R, R] then its record; the record marks it complete."""
    npy = chunk_dir / f"chunk_{index:05d}.npy"
    tmp = chunk_dir / f"chunk_{index:05d}.tmp.npy"
    np.save(tmp, images)
    os.replace(tmp, npy)
    write_json(chunk_dir / f"chunk_{index:05d}.json", record)


def _read_chunks(chunk_dir: Path) -> list[dict]:
    """Records of the complete chunks 0, 1, ... (stops at the first missing one)."""
    records = []
    while (p := chunk_dir / f"chunk_{len(records):05d}.json").exists():
        records.append(json.loads(p.read_text()))
    return records


def _prepare_partial(partial: Path, progress: dict, log: Callable[[str], None]) -> None:
    """Keep a matching partial build for resuming; discard one made with other options."""
    marker = partial / PROGRESS
    if partial.exists():
        if not marker.exists():
            raise DatasetError(f"{partial}: exists and is not a fastprogan partial build; remove it")
        if json.loads(marker.read_text()) == progress:
            log(f"resuming the partial build in {partial}")
            return
        log(f"discarding {partial}: it was started with other options or another source")
        shutil.rmtree(partial)
    (partial / "chunks").mkdir(parents=True)
    write_json(marker, progress)


def _decoded(
    source: Source, positions: list[int], order: np.ndarray, opts: tuple, pool: Any
) -> Iterator[tuple[int, bool, np.ndarray | str]]:
    """(position, ok, image or message) for each position, in order."""
    tasks = [(source.names[order[p]], source.read(int(order[p])), *opts) for p in positions]
    results = pool.map(decode_task, tasks, chunksize=4) if pool is not None else map(decode_task, tasks)
    for p, (ok, value) in zip(positions, results):
        yield p, ok, value


def _assemble(partial: Path, records: list[dict], resolution: int, channels: int) -> dict[str, Any]:
    """Write every level file from the chunks; returns the manifest's 'files' entry."""
    count = sum(len(r["images"]) for r in records)
    levels = {
        r: np.lib.format.open_memmap(
            partial / level_filename(r), mode="w+", dtype=np.uint8, shape=(count, channels, r, r)
        )
        for r in resolutions_for(resolution)
    }
    # Per-image xxh3_64 of every level, hashed from the in-memory pyramid as it is written (no second
    # read of the files; a write that goes wrong on disk is then caught by the loader's check).
    hashes = {r: np.empty(count, dtype=np.uint64) for r in levels}  # uint64 [N] per level
    step = max(1, PYRAMID_BYTES // (channels * resolution * resolution))
    start = 0
    for rec in records:
        top = np.load(partial / "chunks" / f"chunk_{rec['index']:05d}.npy", mmap_mode="r")  # [n, C, R, R]
        for i in range(0, len(top), step):
            for r, level in build_pyramid(np.asarray(top[i : i + step])).items():
                levels[r][start + i : start + i + len(level)] = level
                hashes[r][start + i : start + i + len(level)] = level_hashes(level)
        start += len(top)
    files = {}
    for r, arr in levels.items():
        arr.flush()
        shape = list(arr.shape)
        del arr
        files[str(r)] = {
            "path": level_filename(r),
            "shape": shape,
            "sha256": "",
            HASH_NAME: encode_hashes(hashes[r]),
        }
    levels.clear()
    for entry in files.values():
        entry["sha256"] = sha256_file(partial / entry["path"])
    return files


def create_dataset(
    source: str | os.PathLike,
    out: str | os.PathLike,
    resolution: int,
    *,
    channels: int = 3,
    max_images: int | None = None,
    transform: str = "none",
    workers: int = 0,
    skip_bad: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    chunk_images: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Build the dataset at ``out`` from ``source`` (folder, .zip, or uint8 .npy/.npz); returns ``out``.

    Entries are listed in sorted order and shuffled once by ``numpy.random.default_rng(seed)``; the
    first ``max_images`` usable ones (all if None) are kept in that order. ``workers`` > 0 decodes in a
    process pool (same output). A bad entry raises DatasetError naming it, or with ``skip_bad`` is
    listed in the manifest's ``skipped`` and left out. ``out`` must not exist unless ``overwrite``;
    the old dataset is replaced only once the new one is complete.
    """
    from tqdm import tqdm

    out = Path(out)
    try:
        resolutions_for(resolution)
    except ValueError as exc:
        raise DatasetError(f"--resolution: {exc}") from None
    if channels not in (1, 3):
        raise DatasetError(f"--channels must be 1 or 3, got {channels}")
    if transform not in TRANSFORMS:
        raise DatasetError(f"--transform must be one of {TRANSFORMS}, got {transform!r}")
    if max_images is not None and max_images < 1:
        raise DatasetError(f"--max-images must be >= 1, got {max_images}")
    if out.exists() and not overwrite:
        raise DatasetError(f"{out}: already exists; pass --overwrite to replace it")
    if out.name.endswith(".partial"):
        raise DatasetError(f"{out}: the name may not end in .partial (reserved for unfinished builds)")

    src = Source(source)
    try:
        order = np.random.default_rng(seed).permutation(len(src))
        options = {
            "resolution": resolution,
            "channels": channels,
            "max_images": max_images,
            "transform": transform,
            "skip_bad": skip_bad,
            "seed": seed,
        }
        partial = partial_path(out)
        _prepare_partial(partial, {"options": options, "source": src.fingerprint()}, log)
        chunk_dir = partial / "chunks"
        per_chunk = chunk_images or max(1, CHUNK_BYTES // (channels * resolution * resolution))
        records = [] if (partial / MANIFEST).exists() else _read_chunks(chunk_dir)
        if not (partial / MANIFEST).exists():
            _build_chunks(src, order, options, chunk_dir, records, per_chunk, workers, progress, tqdm)
            count = sum(len(r["images"]) for r in records)
            skipped = [b for r in records for b in r["bad"]]
            if count == 0:
                raise DatasetError(f"{src.path}: no usable images ({len(skipped)} bad files skipped)")
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "tool_version": fastprogan.__version__,
                "count": count,
                "resolutions": resolutions_for(resolution),
                "channels": channels,
                "dtype": "uint8",
                "layout": "NCHW",
                "order": {
                    "shuffle_seed": seed,
                    "method": "source entries sorted by name, then numpy.random.default_rng(seed).permutation",
                },
                "checksum": CHECKSUM_TEXT,
                "source": {"path": str(src.path), "kind": src.kind, "entries": len(src)},
                "options": options,
                "files": _assemble(partial, records, resolution, channels),
                "images": [img for r in records for img in r["images"]],
                "skipped": skipped,
                "ignored": src.ignored,
            }
            write_json(partial / MANIFEST, manifest)
        manifest = json.loads((partial / MANIFEST).read_text())
    finally:
        src.close()

    for bad in manifest["skipped"]:
        log(f"skipped: {bad['error']}")
    if manifest["ignored"]:
        log(f"ignored {len(manifest['ignored'])} non-image files (by extension), listed in the manifest")
    _finalize(partial, out, overwrite)
    log(
        f"wrote {out}: {manifest['count']} images, {manifest['channels']} channels, {manifest['resolutions']}"
    )
    return out


def _build_chunks(
    src: Source,
    order: np.ndarray,
    options: dict,
    chunk_dir: Path,
    records: list[dict],
    per_chunk: int,
    workers: int,
    progress: bool,
    tqdm: Any,
) -> None:
    """Decode the entries into chunk files, continuing after the complete ``records``."""
    max_images = options["max_images"]
    opts = (options["resolution"], options["channels"], options["transform"])
    pos = records[-1]["end"] if records else 0
    count = sum(len(r["images"]) for r in records)
    total = len(order)
    # Decode a few entries per worker at a time, so that --max-images does not decode the whole source.
    batch = max(1, 8 * workers)
    pool = None
    if workers > 0:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: the parent may hold threads (torch, tqdm) that make fork unsafe.
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    bar = tqdm(total=total, initial=pos, unit="img", disable=not progress, desc="decoding")
    try:
        while pos < total and (max_images is None or count < max_images):
            start, images, names, bad = pos, [], [], []
            while pos < total and len(images) < per_chunk and (max_images is None or count < max_images):
                want = min(batch, total - pos)
                if not options["skip_bad"] and max_images is not None:
                    want = min(want, max_images - count)
                for p, ok, value in _decoded(src, list(range(pos, pos + want)), order, opts, pool):
                    if (max_images is not None and count >= max_images) or len(images) >= per_chunk:
                        break
                    pos = p + 1
                    name = src.names[order[p]]
                    if ok:
                        images.append(value)
                        names.append({"name": name, "sha256": hashlib.sha256(value.tobytes()).hexdigest()})
                        count += 1
                    elif options["skip_bad"]:
                        bad.append({"name": name, "error": value})
                    else:
                        raise DatasetError(value)
                bar.n = pos
                bar.refresh()
            c, r = options["channels"], options["resolution"]
            stacked = np.stack(images) if images else np.zeros((0, c, r, r), np.uint8)  # [n, C, R, R]
            record = {"index": len(records), "start": start, "end": pos, "images": names, "bad": bad}
            _write_chunk(chunk_dir, len(records), stacked, record)
            records.append(record)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _finalize(partial: Path, out: Path, overwrite: bool) -> None:
    """Drop the build scaffolding and move the finished dataset into place (replacing ``out`` last)."""
    shutil.rmtree(partial / "chunks", ignore_errors=True)
    old = None
    if out.exists():
        if not overwrite:
            raise DatasetError(f"{out}: already exists; pass --overwrite to replace it")
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(partial, out)
    (out / PROGRESS).unlink(missing_ok=True)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
