"""ImageLoader: order, determinism across workers, rank sharding, exact resume, carry-over."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from fastprogan.data import ImageLoader, create_dataset, open_dataset

N = 10  # not divisible by 3 (world_size) nor by the batch sizes used


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loader")
    # Image i has the constant value i in its first pixel so a batch can be decoded back into indices.
    arr = np.random.default_rng(0).integers(0, 256, (N, 16, 16, 3), dtype=np.uint8)
    arr[:, 0, 0, 0] = np.arange(N)
    np.save(tmp / "src.npy", arr)
    out = create_dataset(tmp / "src.npy", tmp / "ds", 16, progress=False, log=lambda _m: None)
    return open_dataset(out)


def ids(ds, batch: torch.Tensor, resolution: int = 16) -> list[int]:
    """Dataset row of each sample (rows are unique: the data is random)."""
    imgs = ds.images(resolution)
    rows = []
    for sample in batch.numpy():
        match = np.flatnonzero((imgs == sample).all(axis=(1, 2, 3)))
        assert len(match) == 1
        rows.append(int(match[0]))
    return rows


def ids_of(ds, batches, resolution: int = 16) -> list[int]:
    return [i for b in batches for i in ids(ds, b, resolution)]


def take(loader, n):
    return [next(loader) for _ in range(n)]


def test_batches_are_uint8_rows_of_the_dataset(ds):
    loader = ImageLoader(ds, 16, 4)
    batch = next(loader)
    assert batch.dtype == torch.uint8 and batch.shape == (4, 3, 16, 16)
    assert not batch.is_pinned()  # CPU-only here: pin_memory=None means off
    rows = ids(ds, batch)
    np.testing.assert_array_equal(batch.numpy(), ds.images(16)[rows])
    assert loader.steps_per_epoch == N // 4


def test_each_epoch_is_a_new_permutation_covering_the_data(ds):
    loader = ImageLoader(ds, 16, 5, drop_last=False)
    epochs = [ids_of(ds, take(loader, 2)) for _ in range(3)]
    for e in epochs:
        assert sorted(e) == list(range(N))
    assert epochs[0] != epochs[1] != epochs[2]
    expect = np.random.default_rng([0, 1]).permutation(N).tolist()
    assert epochs[1] == expect  # documented order: default_rng([seed, epoch])


def test_same_seed_same_batches_whatever_num_workers(ds):
    plain = take(ImageLoader(ds, 16, 3, seed=7), 11)  # crosses several epochs
    threaded = ImageLoader(ds, 16, 3, seed=7, num_workers=2)
    for a, b in zip(plain, take(threaded, 11)):
        assert torch.equal(a, b)
    threaded.close()
    other = take(ImageLoader(ds, 16, 3, seed=8), 11)
    assert any(not torch.equal(a, b) for a, b in zip(plain, other))


def test_small_resolution_gather_path(ds):
    loader = ImageLoader(ds, 4, 4, seed=3)
    batch = next(loader)
    assert batch.shape == (4, 3, 4, 4)
    rows = np.random.default_rng([3, 0]).permutation(N)[:4]
    np.testing.assert_array_equal(batch.numpy(), ds.images(4)[rows])


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_are_disjoint_and_cover_the_dataset(ds, drop_last):
    world, batch = 3, 2
    per_rank = []
    for rank in range(world):
        loader = ImageLoader(ds, 16, batch, rank=rank, world_size=world, drop_last=drop_last, seed=1)
        per_rank.append(ids_of(ds, take(loader, loader.steps_per_epoch)))
        assert loader.epoch == 1 and loader.offset == 0  # exactly one epoch consumed
    flat = [i for r in per_rank for i in r]
    assert len(flat) == len(set(flat))  # disjoint
    if drop_last:
        assert [len(r) for r in per_rank] == [2, 2, 2]  # same full batches on every rank
    else:
        assert sorted(flat) == list(range(N))  # together they cover the dataset
        assert [len(r) for r in per_rank] == [4, 3, 3]


@pytest.mark.parametrize("workers", [0, 2])
def test_state_dict_resume_yields_the_same_next_batches(ds, workers):
    original = ImageLoader(ds, 16, 3, seed=4, num_workers=workers)
    take(original, 5)
    state = original.state_dict()
    # Plain ints: survives JSON and torch.load(weights_only=True).
    assert json.loads(json.dumps(state)) == state
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    expected = take(original, 7)
    restored = ImageLoader(ds, 16, 3, num_workers=2 - workers, start=state)
    assert restored.seed == 4
    for a, b in zip(expected, take(restored, 7)):
        assert torch.equal(a, b)
    again = ImageLoader(ds, 16, 3, seed=99)
    take(again, 2)
    again.load_state_dict(state)
    for a, b in zip(expected, take(again, 7)):
        assert torch.equal(a, b)


def test_position_carries_over_to_another_resolution_and_batch_size(ds):
    low = ImageLoader(ds, 8, 2, seed=5, drop_last=False)
    seen = ids_of(ds, take(low, 2), 8)
    high = ImageLoader(ds, 16, 3, drop_last=False, start=low.state_dict())
    rest = ids_of(ds, take(high, 2))
    perm = np.random.default_rng([5, 0]).permutation(N).tolist()
    assert seen + rest == perm[:10]


def test_load_state_dict_rejects_another_dataset(ds):
    state = ImageLoader(ds, 16, 2).state_dict()
    state["num_images"] = N + 1
    with pytest.raises(ValueError, match="dataset of 11 images"):
        ImageLoader(ds, 16, 2, start=state)


def test_invalid_arguments(ds):
    with pytest.raises(ValueError, match="rank 3"):
        ImageLoader(ds, 16, 2, rank=3, world_size=3)
    with pytest.raises(ValueError, match="more than the 10 images"):
        ImageLoader(ds, 16, 4, world_size=3)
    with pytest.raises(Exception, match="no level at resolution 32"):
        ImageLoader(ds, 32, 2)
