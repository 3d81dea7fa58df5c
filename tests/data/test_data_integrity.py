"""Data integrity: level files checked when a dataset is opened, per-image checksums verified by the
loader as it reads (raise naming index and file, or --skip-bad), `dataset verify --rehash`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastprogan.cli import main
from fastprogan.data import DatasetError, ImageLoader, create_dataset, open_dataset, verify_dataset
from fastprogan.data import checksums as checksums_mod
from fastprogan.data.checksums import HASH_NAME, image_hash
from fastprogan.data.errors import CorruptImageError


@pytest.fixture
def dataset(tmp_path):
    """A 12-image RGB dataset at 32px (levels 4..32) built from a uint8 array."""
    arr = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), np.uint8)
    np.save(tmp_path / "src.npy", arr)
    return create_dataset(tmp_path / "src.npy", tmp_path / "ds", 32, progress=False, log=lambda _m: None)


def flip_bytes(path, resolution: int, index: int, channels: int = 3) -> None:
    """Invert 3 bytes inside image ``index``'s pixel data of a level file (the header stays valid)."""
    file = path / f"res_{resolution:04d}.npy"
    image_bytes = channels * resolution * resolution
    data_start = file.stat().st_size - 12 * image_bytes  # the file is exactly header + pixels
    with open(file, "r+b") as f:
        f.seek(data_start + index * image_bytes + image_bytes // 2)
        chunk = bytearray(f.read(3))
        f.seek(data_start + index * image_bytes + image_bytes // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))


def read_epoch(loader: ImageLoader, batches: int) -> list:
    return [next(loader) for _ in range(batches)]


# ---- per-image checksums written at build time ----


def test_create_writes_an_xxh3_per_image_and_level(dataset):
    ds = open_dataset(dataset)
    assert ds.has_checksums and ds.manifest["format_version"] == 2
    for r in ds.resolutions:
        images = ds.images(r)
        expected = ds.image_hashes(r)
        assert expected.dtype == np.uint64 and expected.shape == (12,)
        assert [image_hash(img) for img in images] == expected.tolist()
    assert all("sha256" in e for e in ds.manifest["images"])  # the top-level sha256 stays


# ---- the loader verifies as it reads ----


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("resolution", [4, 32])  # np.take path (images < 16 KB; the copy loop: below)
def test_flipped_bytes_stop_the_loader_naming_index_and_file(dataset, resolution, num_workers):
    flip_bytes(dataset, resolution, 7)
    open_dataset(dataset)  # the header and size are fine: opening succeeds, the pixels are wrong
    loader = ImageLoader(dataset, resolution, 4, seed=1, num_workers=num_workers)
    with pytest.raises(CorruptImageError) as info:
        read_epoch(loader, 3)  # one epoch: every image once
    loader.close()
    message = str(info.value)
    assert info.value.index == 7 and info.value.file == dataset / f"res_{resolution:04d}.npy"
    assert f"res_{resolution:04d}.npy: image 7 does not match its xxh3_64" in message
    assert "--skip-bad" in message and "dataset verify" in message
    assert isinstance(info.value, DatasetError)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_bad_replaces_the_image_counts_and_logs_once(dataset, num_workers):
    flip_bytes(dataset, 32, 5)
    ds = open_dataset(dataset)
    logged = []
    loader = ImageLoader(ds, 32, 4, seed=1, skip_bad=True, log=logged.append, num_workers=num_workers)
    reference = ImageLoader(ds, 32, 4, seed=1, verify=False)  # the same order, unchecked
    corrupt = np.asarray(ds.images(32)[5])
    for _epoch in range(2):
        for _ in range(3):
            got, raw = next(loader).numpy(), next(reference).numpy()
            assert got.shape == (4, 3, 32, 32)  # the batch keeps its size
            for j, (img_got, img_raw) in enumerate(zip(got, raw)):
                if np.array_equal(img_raw, corrupt):  # here the corrupt image was: a sound one of the batch
                    assert any(np.array_equal(img_got, other) for k, other in enumerate(raw) if k != j)
                else:
                    assert np.array_equal(img_got, img_raw)  # everything else untouched
                assert not np.array_equal(img_got, corrupt)
    loader.close()  # prefetching threads may have read a batch ahead: count after they stopped
    assert loader.skipped in (2, 3)  # image 5 read once per epoch (+1 if the next epoch was prefetched)
    if num_workers == 0:
        assert loader.skipped == 2
    assert len(logged) == 1 and "skipped corrupt image 5 of" in logged[0] and "res_0032.npy" in logged[0]
    assert ds.verified(32).corrupt == [5]


def test_each_image_is_hashed_once_per_process(dataset, monkeypatch):
    calls = []
    real = checksums_mod.VerifiedLevel.record
    monkeypatch.setattr(
        checksums_mod.VerifiedLevel,
        "record",
        lambda self, i, digest: calls.append(i) or real(self, i, digest),
    )
    ds = open_dataset(dataset)
    loader = ImageLoader(ds, 16, 4, seed=3)
    read_epoch(loader, 3)
    assert len(calls) == 12  # first epoch: every image checked once
    read_epoch(loader, 6)
    ImageLoader(ds, 16, 6, seed=9).__next__()  # another loader of the same opened dataset
    assert len(calls) == 12  # later epochs and loaders cost no hashing


def test_a_level_all_sound_is_read_without_lookups_and_a_corrupt_one_never_is(dataset, monkeypatch):
    ds = open_dataset(dataset)
    loader = ImageLoader(ds, 32, 4, seed=3)
    level = ds.verified(32)
    read_epoch(loader, 2)
    assert not level.all_sound
    next(loader)
    assert level.all_sound  # refreshed as the epoch's last batch took the stream into epoch 1
    # From now on a batch costs what it costs with verify off: the verdicts are not even read.
    monkeypatch.setattr(level, "state", None)
    reference = ImageLoader(ds, 32, 4, seed=3, verify=False, start=loader.state_dict())
    for _ in range(4):
        assert np.array_equal(next(loader).numpy(), next(reference).numpy())
    flip_bytes(dataset, 32, 7)
    bad = open_dataset(dataset)
    skipping = ImageLoader(bad, 32, 4, seed=3, skip_bad=True)
    read_epoch(skipping, 9)  # three epochs
    assert not bad.verified(32).all_sound and skipping.skipped == 3  # replaced in every epoch


@pytest.mark.parametrize("source_first", [False, True], ids=["copy-then-hash", "hash-then-copy"])
def test_copy_and_hash_equals_the_image_hash_and_copies(source_first, monkeypatch):
    monkeypatch.setattr(checksums_mod, "_HASH_SOURCE_FIRST_BYTES", 0 if source_first else 1 << 40)
    images = np.random.default_rng(5).integers(0, 256, (3, 3, 40, 40), np.uint8)  # [N, C, r, r]
    out = np.zeros_like(images)
    for i in range(3):
        assert checksums_mod.copy_and_hash(images[i], out[i]) == image_hash(images[i])
    assert np.array_equal(out, images)
    with pytest.raises((BufferError, ValueError)):  # a strided view is refused, never hashed wrongly
        checksums_mod.copy_and_hash(images[0][:, ::2], out[0][:, ::2])


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("source_first", [False, True], ids=["copy-then-hash", "hash-then-copy"])
def test_per_image_copy_path_hashes_as_it_copies(dataset, monkeypatch, source_first, num_workers):
    """The per-image copy loop (images of >= 16 KB; forced here for 3 KB ones) verifies in the same
    visit as the copy, in both orders: a flipped image stops the loader before its batch is returned,
    with --skip-bad it is replaced and logged once, and sound batches are exact copies."""
    from fastprogan.data import loader as loader_mod

    monkeypatch.setattr(loader_mod, "_SMALL_IMAGE_BYTES", 0)
    monkeypatch.setattr(checksums_mod, "_HASH_SOURCE_FIRST_BYTES", 0 if source_first else 1 << 40)
    ds = open_dataset(dataset)
    reference = next(ImageLoader(ds, 32, 4, seed=1, verify=False))
    fresh = ImageLoader(open_dataset(dataset), 32, 4, seed=1, num_workers=num_workers)
    assert bool((next(fresh) == reference).all())  # sound: the verified batch is the plain copy
    fresh.close()
    flip_bytes(dataset, 32, 7)
    loader = ImageLoader(open_dataset(dataset), 32, 4, seed=1, num_workers=num_workers)
    with pytest.raises(CorruptImageError, match="image 7 does not match") as info:
        read_epoch(loader, 3)
    loader.close()
    assert info.value.index == 7
    ds = open_dataset(dataset)
    logged = []
    skipping = ImageLoader(ds, 32, 4, seed=1, skip_bad=True, log=logged.append, num_workers=num_workers)
    batches = read_epoch(skipping, 3)
    skipping.close()
    corrupt = np.asarray(ds.images(32)[7])
    assert all(not np.array_equal(img, corrupt) for b in batches for img in b.numpy())
    assert len(logged) == 1 and "skipped corrupt image 7 of" in logged[0]
    assert ds.verified(32).corrupt == [7] and (ds.verified(32).state == 1).sum() == 11


def test_verify_false_reads_without_checking(dataset):
    flip_bytes(dataset, 8, 2)
    loader = ImageLoader(dataset, 8, 4, verify=False)
    assert len(read_epoch(loader, 6)) == 6


def test_old_dataset_without_checksums_is_refused_then_upgraded_by_rehash(dataset, capsys):
    manifest_path = dataset / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    sha_before = {r: e["sha256"] for r, e in manifest["files"].items()}
    for entry in manifest["files"].values():
        del entry[HASH_NAME]
    manifest["format_version"] = 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(
        DatasetError, match=r"no per-image xxh3_64 .*dataset verify .* --rehash.*--no-verify-data"
    ):
        ImageLoader(dataset, 8, 4)
    assert main(["dataset", "verify", str(dataset)]) == 2
    assert "--rehash" in capsys.readouterr().err
    assert main(["dataset", "verify", str(dataset), "--rehash"]) == 0
    assert "checksums written" in capsys.readouterr().out
    upgraded = json.loads(manifest_path.read_text())
    assert upgraded["format_version"] == 2
    assert {r: e["sha256"] for r, e in upgraded["files"].items()} == sha_before  # sha256 kept
    assert open_dataset(dataset).has_checksums
    read_epoch(ImageLoader(dataset, 8, 4), 3)
    assert main(["dataset", "verify", str(dataset)]) == 0


def test_rehash_refuses_a_damaged_dataset(dataset, capsys):
    flip_bytes(dataset, 16, 4)
    before = (dataset / "manifest.json").read_text()
    assert main(["dataset", "verify", str(dataset), "--rehash"]) == 2
    assert "res_0016.npy: sha256 does not match" in capsys.readouterr().err
    assert (dataset / "manifest.json").read_text() == before  # nothing blessed, nothing written


def test_verify_reports_xxh3_mismatch_per_level(dataset):
    # A level whose file sha256 was updated to match (e.g. rewritten by hand): only the per-image
    # checksums can tell which images changed.
    from fastprogan.data.create import sha256_file

    flip_bytes(dataset, 8, 3)
    flip_bytes(dataset, 8, 9)
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["files"]["8"]["sha256"] = sha256_file(dataset / "res_0008.npy")
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_dataset(dataset)
    assert problems == [
        f"{dataset / 'res_0008.npy'}: image(s) 3, 9 do not match their xxh3_64 (the pixel data was modified or damaged)"
    ]


# ---- level files checked when the dataset is opened (cheap: header and size) ----


def _truncate(file, keep_fraction: float) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep_fraction)])


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda f: _truncate(f, 0.7),
            r"res_0016\.npy: truncated: \d+ bytes, its header's shape \(12, 3, 16, 16\) needs \d+",
        ),
        (
            lambda f: f.write_bytes(
                b"\x93NUMPY\x01\x00v\x00{'descr': '|u1', 'fortran_order': Fal" + f.read_bytes()[60:]
            ),
            r"res_0016\.npy: corrupt \.npy header",
        ),
        (lambda f: f.write_bytes(b"garbage!" + f.read_bytes()[8:]), r"res_0016\.npy: corrupt \.npy header"),
        (lambda f: _truncate(f, 0.01), r"res_0016\.npy: corrupt \.npy header"),
        (lambda f: f.unlink(), r"res_0016\.npy: missing: the dataset lacks its 16x16 level"),
        (lambda f: f.write_bytes(f.read_bytes() + b"\0" * 5), r"res_0016\.npy: 5 bytes longer"),
    ],
    ids=["truncated", "bad-header-dict", "bad-magic", "header-cut", "missing", "trailing-bytes"],
)
def test_damaged_level_fails_at_open_naming_file_and_fix(dataset, damage, expected):
    damage(dataset / "res_0016.npy")
    with pytest.raises(DatasetError, match=expected) as info:
        open_dataset(dataset)
    message = str(info.value)
    assert "\n" not in message
    assert (
        f"fastprogan dataset create {dataset.parent / 'src.npy'} {dataset} --resolution 32 --overwrite"
        in message
    )
    problems = verify_dataset(dataset)
    assert len(problems) == 1 and "res_0016.npy" in problems[0]


def test_several_damaged_levels_report_the_first_and_count_the_rest(dataset):
    (dataset / "res_0004.npy").unlink()
    _truncate(dataset / "res_0032.npy", 0.5)
    with pytest.raises(
        DatasetError, match=r"res_0004\.npy: missing.*\(and 1 more: fastprogan dataset verify"
    ):
        open_dataset(dataset)
    assert len(verify_dataset(dataset)) == 2


# ---- through the trainer: the run stops naming the image, or with skip_bad goes on and logs it ----


@pytest.fixture
def corrupt_digits(tmp_path):
    """The embedded digits dataset with bytes flipped in every fifth image of its 4x4 level."""
    from fastprogan.data import materialize_default_dataset

    path = materialize_default_dataset(tmp_path / "data")
    ds = open_dataset(path)
    file = path / "res_0004.npy"
    image_bytes = ds.channels * 16
    data_start = file.stat().st_size - ds.num_images * image_bytes
    raw = bytearray(file.read_bytes())
    for i in range(0, ds.num_images, 5):
        raw[data_start + i * image_bytes + 5] ^= 0xFF
    file.write_bytes(bytes(raw))
    return path


def test_trainer_stops_on_a_corrupt_image_or_skips_and_logs_it(corrupt_digits, tmp_path):
    from fastprogan.training.loop import Trainer
    from tests.training.helpers import tiny_config

    settings = dict(resolution=4, total_kimg=0.032, lod_training_kimg=0.032, snapshot_ticks=0, grid_images=4)
    with pytest.raises(CorruptImageError, match=r"res_0004\.npy: image \d+ does not match its xxh3_64"):
        Trainer(tmp_path / "stop", tiny_config(corrupt_digits, **settings), progress=False).run()
    run = tmp_path / "skip"
    Trainer(run, tiny_config(corrupt_digits, skip_bad=True, **settings), progress=False).run()
    log = (run / "log.txt").read_text()
    assert "skipped corrupt image" in log and "res_0004.npy" in log
    assert "read(s) replaced" in log
    off = tmp_path / "off"
    Trainer(off, tiny_config(corrupt_digits, verify_data=False, **settings), progress=False).run()
    assert "skipped corrupt image" not in (off / "log.txt").read_text()


def test_train_flags_set_the_config_fields(tmp_path, capsys):
    assert (
        main(["train", "--out", str(tmp_path / "r"), "--print-config", "--no-verify-data", "--skip-bad"]) == 0
    )
    config = json.loads(capsys.readouterr().out)
    assert config["verify_data"] is False and config["skip_bad"] is True
    assert main(["train", "--out", str(tmp_path / "r"), "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["verify_data"] is True and config["skip_bad"] is False  # on by default


def test_train_on_a_truncated_level_is_one_line_and_exit_2(dataset, tmp_path, capsys):
    _truncate(dataset / "res_0008.npy", 0.6)
    rc = main(["train", "--data", str(dataset), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "res_0008.npy: truncated" in err and "--overwrite" in err


def test_info_still_summarises_a_damaged_dataset_and_exits_2(dataset, capsys):
    assert main(["dataset", "info", str(dataset)]) == 0
    assert "checksums:   per-image xxh3_64 at every level" in capsys.readouterr().out
    (dataset / "res_0004.npy").unlink()
    assert main(["dataset", "info", str(dataset)]) == 2
    captured = capsys.readouterr()
    assert "images:      12" in captured.out and "res_0004.npy: missing" in captured.err
