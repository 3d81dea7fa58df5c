"""Every fault of issue 12 item 4: one line naming the file or setting and the fix, exit status 2, no
traceback, nothing half-written, and (where it can be known) before any training compute."""

import errno
import os
import shutil

import numpy as np
import pytest
import torch

from fastprogan.cli import main
from fastprogan.data.create import level_filename
from fastprogan.training import checkpoint as ckpt
from tests.training.helpers import tiny_cli_args


def _fails_cleanly(capsys, argv, *needles, out=None, started=False):
    """Run the CLI; assert exit 2, exactly one stderr line holding every needle, no traceback, no
    temporary file left in ``out``, and (unless ``started``) no training tick logged."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    if out is not None and out.is_dir():
        leftovers = [p.name for p in out.rglob("*") if ".tmp-" in p.name]
        assert leftovers == [], f"half-written files left: {leftovers}"
        if not started:
            assert not (out / "stats.jsonl").exists() or not (out / "stats.jsonl").read_text()
    return lines[0]


@pytest.fixture
def dataset_copy(default_dataset, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(default_dataset, copy)
    return copy


def test_minibatch_larger_than_the_dataset(default_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    args = tiny_cli_args(default_dataset, minibatch_dict={16: 2048})
    _fails_cleanly(
        capsys,
        ["train", "--out", str(out), *args],
        "minibatch_dict[16] = 2048",
        "1797 images",
        "lower it",
        out=out,
    )


def test_minibatch_not_divisible_by_the_stddev_group(default_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    args = tiny_cli_args(default_dataset, minibatch_dict={8: 18})
    _fails_cleanly(
        capsys,
        ["train", "--out", str(out), *args],
        "minibatch_dict[8] = 18",
        "minibatch-stddev group 4 (mbstd_group_size)",
        out=out,
    )


def test_missing_level(dataset_copy, tmp_path, capsys):
    (dataset_copy / level_filename(8)).unlink()
    out = tmp_path / "run"
    _fails_cleanly(
        capsys, ["train", "--out", str(out), *tiny_cli_args(dataset_copy)], level_filename(8), out=out
    )


@pytest.mark.parametrize("damage", ["truncated", "header"])
def test_truncated_or_corrupt_level(dataset_copy, tmp_path, capsys, damage):
    level = dataset_copy / level_filename(16)
    data = level.read_bytes()
    level.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00garbage" + data[8:])
    out = tmp_path / "run"
    _fails_cleanly(capsys, ["train", "--out", str(out), *tiny_cli_args(dataset_copy)], str(level), out=out)


def test_out_under_a_file(default_dataset, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = blocker / "run"
    _fails_cleanly(capsys, ["train", "--out", str(out), *tiny_cli_args(default_dataset)], str(out), "--out")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_out_not_writable(default_dataset, tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        _fails_cleanly(
            capsys, ["train", "--out", str(out), *tiny_cli_args(default_dataset)], str(out), "writable"
        )
    finally:
        out.chmod(0o700)


def _enospc():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_at_start(default_dataset, tmp_path, capsys, monkeypatch):
    from pathlib import Path

    real = Path.write_bytes
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: (_ for _ in ()).throw(_enospc()))
    out = tmp_path / "run"
    line = _fails_cleanly(
        capsys, ["train", "--out", str(out), *tiny_cli_args(default_dataset)], str(out), out=out
    )
    monkeypatch.setattr(Path, "write_bytes", real)
    assert "No space left on device" in line and "free space" in line


def test_disk_full_while_writing_a_checkpoint(default_dataset, tmp_path, capsys, monkeypatch):
    def full_disk_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 the first bytes of a zip")
        raise _enospc()

    monkeypatch.setattr(torch, "save", full_disk_save)
    out = tmp_path / "run"
    line = _fails_cleanly(
        capsys,
        ["train", "--out", str(out), *tiny_cli_args(default_dataset, snapshot_ticks=1)],
        "checkpoint-000000064.pt",
        "No space left on device",
        "--resume latest",
        out=out,
        started=True,
    )
    assert "free space" in line and ckpt.list_checkpoints(out) == []


def test_disk_full_while_writing_a_grid(default_dataset, tmp_path, capsys, monkeypatch):
    from PIL import Image

    real = Image.Image.save

    def full_disk_save(self, fp, *args, **kwargs):
        if "grid-" in str(fp):
            with open(fp, "wb") as f:
                f.write(b"\x89PNG partial")
            raise _enospc()
        return real(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk_save)
    out = tmp_path / "run"
    _fails_cleanly(
        capsys,
        ["train", "--out", str(out), *tiny_cli_args(default_dataset)],
        "grid-0000.064.png",
        "No space left on device",
        out=out,
        started=True,
    )
    assert not (out / "grid-0000.064.png").exists()


@pytest.mark.parametrize(
    ("content", "kind"),
    [("hello, this is text\n", "text"), ('{"G": [1, 2, 3]}', "JSON"), (b"\x00\x01\x02\xff\xfe", "other")],
)
def test_a_file_that_is_not_a_checkpoint(tmp_path, capsys, content, kind):
    fake = tmp_path / "checkpoint-000000064.pt"
    fake.write_bytes(content.encode() if isinstance(content, str) else content)
    for argv in (
        ["train", "--out", str(tmp_path / "run"), "--resume", str(fake)],
        ["generate", "--checkpoint", str(fake), "--out", str(tmp_path / "gen")],
    ):
        line = _fails_cleanly(capsys, argv, str(fake), "not a fastprogan checkpoint")
        assert "refused" not in line and "KeyError" not in line  # not the security refusal, not a bare key
        if kind != "other":
            assert f"the file is {kind}" in line


def test_generate_missing_checkpoint_names_the_option(tmp_path, capsys):
    line = _fails_cleanly(
        capsys, ["generate", "--checkpoint", "missing.pt", "--out", str(tmp_path)], "missing.pt"
    )
    assert line.startswith("fastprogan generate: error: --checkpoint missing.pt")


def test_loader_state_of_an_older_build_converts_to_the_global_position(default_dataset):
    """Version-1 loader states (a rank's share offset) resume at the same global position."""
    from fastprogan.data import ImageLoader, open_dataset

    ds = open_dataset(default_dataset)
    two = [ImageLoader(ds, 4, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for loader in two:
        for _ in range(5):
            next(loader)
    old = {"version": 1, "seed": 3, "epoch": 0, "offset": 40, "num_images": ds.num_images, "world_size": 2}
    one = ImageLoader(ds, 4, 16, seed=0, start=old)
    merged = torch.stack([next(two[0]), next(two[1])], 1).reshape(16, *one._images.shape[1:])
    assert torch.equal(next(one), merged)
    assert np.array_equal(
        merged.numpy(), ds.images(4)[np.random.default_rng([3, 0]).permutation(ds.num_images)[80:96]]
    )


def test_generate_into_a_path_under_a_file(finished_run, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    argv = ["generate", "--checkpoint", str(finished_run), "--seeds", "0-1", "--out", str(blocker / "gen")]
    line = _fails_cleanly(capsys, argv, str(blocker / "gen"))
    assert line.startswith("fastprogan generate: error: cannot create --out")
