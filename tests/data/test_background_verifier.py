"""The background verifier process (fastprogan.data.verifier): it checks images ahead of the loader,
and the loader's batches, errors and skip reports are the same with or without it."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from fastprogan.data import ImageLoader, create_dataset, open_dataset
from fastprogan.data import verifier as verifier_mod
from fastprogan.data.errors import CorruptImageError

pytestmark = pytest.mark.skipif(
    not verifier_mod.supported(),
    reason=f"needs a POSIX platform to pass descriptors to the helper process (os.name is {os.name!r})",
)


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """A 48-image RGB dataset at 32px; the helper's size and spare-core thresholds lifted."""
    monkeypatch.setattr(verifier_mod, "BACKGROUND_MIN_BYTES", 0)
    monkeypatch.setattr(verifier_mod, "usable_cpus", lambda: 64)
    arr = np.random.default_rng(0).integers(0, 256, (48, 32, 32, 3), np.uint8)
    np.save(tmp_path / "src.npy", arr)
    return create_dataset(tmp_path / "src.npy", tmp_path / "ds", 32, progress=False, log=lambda _m: None)


def flip_bytes(path, index: int, resolution: int = 32, n: int = 48) -> None:
    file = path / f"res_{resolution:04d}.npy"
    image_bytes = 3 * resolution * resolution
    start = file.stat().st_size - n * image_bytes + index * image_bytes + image_bytes // 2
    with open(file, "r+b") as f:
        f.seek(start)
        chunk = bytearray(f.read(4))
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in chunk))


def test_helper_checks_the_published_batches_and_batches_are_unchanged(dataset):
    ds = open_dataset(dataset)
    loader = ImageLoader(ds, 32, 4, seed=2, verify_ahead=3)
    plain = ImageLoader(dataset, 32, 4, seed=2, verify=False)
    first = next(loader)
    helper = loader._background
    assert helper is not None and helper.wait_ready()
    level = ds.verified(32)
    # The three batches after the first are published: the helper checks them without the loader.
    expected = np.concatenate([loader._next_indices(*pos)[0] for pos, _ in loader._ahead])
    deadline = time.monotonic() + 10
    while not (level.state[expected] == level.SOUND).all() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (level.state[expected] == level.SOUND).all() and helper.hashed >= len(expected)
    assert bool((first == next(plain)).all())
    for _ in range(20):  # more than an epoch: identical to the unverified stream
        assert bool((next(loader) == next(plain)).all())
    assert (level.state == level.SOUND).all()
    helper.stop()
    assert not helper.alive


def test_corrupt_image_found_by_the_helper_stops_or_is_skipped_and_reported_once(dataset):
    flip_bytes(dataset, 9)
    ds = open_dataset(dataset)
    level = ds.verified(32)
    # The helper alone checks every image (the whole epoch published), before the loader reads any.
    loader = ImageLoader(ds, 32, 4, seed=1, verify_ahead=12)
    order = loader._next_indices(0, 0)[0]
    next(loader)
    assert loader._background.wait_ready()
    deadline = time.monotonic() + 10
    while level.state[9] == level.UNCHECKED and time.monotonic() < deadline:
        time.sleep(0.01)
    if 9 not in order:  # the first batch was the loader's own; otherwise the helper found it
        assert level.state[9] == level.CORRUPT and level.corrupt == []  # found, not yet reported
    with pytest.raises(CorruptImageError, match="image 9 does not match") as info:
        for _ in range(12):
            next(loader)
    assert info.value.index == 9
    ds = open_dataset(dataset)  # a new process's view: nothing checked, nothing reported
    level = ds.verified(32)
    logged: list[str] = []
    skipping = ImageLoader(ds, 32, 4, seed=1, skip_bad=True, log=logged.append, verify_ahead=12)
    for _ in range(24):  # two epochs: image 9 replaced each time, reported once
        next(skipping)
    assert skipping.skipped == 2
    assert len(logged) == 1 and "skipped corrupt image 9 of" in logged[0]
    assert level.corrupt == [9]


def test_no_helper_without_a_spare_core_small_level_or_when_off(dataset, monkeypatch):
    ds = open_dataset(dataset)
    assert ImageLoader(ds, 32, 4, verify_ahead=0).verify_ahead == 0
    assert ImageLoader(ds, 32, 4, verify=False).verify_ahead == 0
    monkeypatch.setattr(verifier_mod, "usable_cpus", lambda: 2)
    assert ImageLoader(ds, 32, 4, num_workers=1).verify_ahead == 0  # main + 1 gather thread = 2
    assert ImageLoader(ds, 32, 4, num_workers=0).verify_ahead == 4
    monkeypatch.setattr(verifier_mod, "BACKGROUND_MIN_BYTES", 1 << 40)
    assert ImageLoader(ds, 32, 4).verify_ahead == 0
    with pytest.raises(ValueError, match="verify_ahead"):
        ImageLoader(ds, 32, 4, verify_ahead=-1)


@pytest.mark.parametrize(
    ("cpus", "ranks", "threads"), [(1, 1, 0), (2, 1, 0), (3, 1, 1), (4, 1, 2), (64, 1, 2), (16, 8, 0)]
)
def test_auto_workers_leave_a_core_for_the_caller_and_the_helper(dataset, monkeypatch, cpus, ranks, threads):
    monkeypatch.setattr(verifier_mod, "usable_cpus", lambda: cpus)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(ranks))
    loader = ImageLoader(open_dataset(dataset), 32, 4, num_workers="auto")
    assert loader.num_workers == threads
    # Wherever this process has 2 CPUs or more, the helper gets one of them.
    assert loader.verify_ahead == (4 if cpus // ranks >= 2 else 0)


@pytest.mark.parametrize("bad", ["two", -1, 1.5, True, None])
def test_num_workers_must_be_a_count_or_auto(dataset, bad):
    with pytest.raises(ValueError, match="num_workers"):
        ImageLoader(open_dataset(dataset), 32, 4, num_workers=bad)


def test_a_helper_that_fails_leaves_the_loader_hashing_alone(dataset, monkeypatch):
    ds = open_dataset(dataset)
    loader = ImageLoader(ds, 32, 4, seed=0)
    next(loader)
    helper = loader._background
    assert helper.wait_ready()
    helper.process.kill()  # exits with a signal: failed
    helper.process.wait()
    assert helper.failed
    plain = ImageLoader(dataset, 32, 4, seed=0, verify=False)
    next(plain)
    for _ in range(12):
        assert bool((next(loader) == next(plain)).all())
    assert ds.verified(32).background(dataset / "res_0032.npy") is None  # not restarted
    assert (ds.verified(32).state == 1).all()  # the loader checked the rest itself


def test_the_helper_exits_at_end_of_file_on_its_wake_pipe(dataset):
    # The parent gone (or stop()) closes the pipe's write end: the idle helper leaves at once, with
    # the level still unchecked and no stop flag set.
    level = open_dataset(dataset).verified(32)
    helper = level.background(dataset / "res_0032.npy")
    assert helper is not None and helper.wait_ready()
    time.sleep(0.05)  # idle, waiting on the pipe
    assert helper.alive and (level.state == level.UNCHECKED).all()
    helper._close_wake()
    helper.process.wait(timeout=5)
    assert helper.process.returncode == 0
    helper.stop()
