"""Atomic, resumable builds: an interrupted run leaves no OUT, and a rerun completes it identically."""

from __future__ import annotations

import json

import pytest

from fastprogan.data import create, open_dataset


class Interrupted(Exception):
    pass


def _build(src, out, **kw):
    return create.create_dataset(src, out, 16, progress=False, log=lambda _m: None, chunk_images=3, **kw)


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_interrupted_build_resumes_and_equals_an_uninterrupted_one(tmp_path, write_images, monkeypatch):
    write_images(tmp_path / "src", 10, size=(16, 16))
    reference = _build(tmp_path / "src", tmp_path / "ref")

    real_write, real_decode = create._write_chunk, create.decode_task
    calls = {"write": 0, "decode": 0}

    def failing_write(*args):
        calls["write"] += 1
        if calls["write"] == 3:  # two chunks (6 images) are on disk, then the run dies
            raise Interrupted
        return real_write(*args)

    def counting_decode(task):
        calls["decode"] += 1
        return real_decode(task)

    monkeypatch.setattr(create, "_write_chunk", failing_write)
    with pytest.raises(Interrupted):
        _build(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    partial = tmp_path / "out.partial"
    assert partial.is_dir() and not (partial / "manifest.json").exists()
    with pytest.raises(create.DatasetError, match="an unfinished build"):
        open_dataset(partial)

    monkeypatch.setattr(create, "_write_chunk", real_write)
    monkeypatch.setattr(create, "decode_task", counting_decode)
    out = _build(tmp_path / "src", tmp_path / "out")
    assert calls["decode"] == 4  # only the 4 images not in the two finished chunks are decoded again
    assert not partial.exists()
    assert _files(out) == _files(reference)


def test_interruption_during_assembly_leaves_no_dataset(tmp_path, write_images, monkeypatch):
    write_images(tmp_path / "src", 5, size=(16, 16))
    real = create._assemble

    def failing(*args):
        raise Interrupted

    monkeypatch.setattr(create, "_assemble", failing)
    with pytest.raises(Interrupted):
        _build(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(create, "_assemble", real)
    out = _build(tmp_path / "src", tmp_path / "out")
    assert open_dataset(out).num_images == 5


def test_partial_build_with_other_options_is_discarded(tmp_path, write_images, monkeypatch):
    write_images(tmp_path / "src", 8, size=(16, 16))
    real_write = create._write_chunk

    def failing_write(*args):
        raise Interrupted

    monkeypatch.setattr(create, "_write_chunk", failing_write)
    with pytest.raises(Interrupted):
        _build(tmp_path / "src", tmp_path / "out", seed=1)
    progress = json.loads((tmp_path / "out.partial" / ".progress.json").read_text())
    assert progress["options"]["seed"] == 1
    monkeypatch.setattr(create, "_write_chunk", real_write)
    messages = []
    create.create_dataset(
        tmp_path / "src", tmp_path / "out", 16, seed=2, chunk_images=3, progress=False, log=messages.append
    )
    assert any("discarding" in m for m in messages)
    assert open_dataset(tmp_path / "out").manifest["options"]["seed"] == 2


def test_foreign_partial_dir_is_not_deleted(tmp_path, write_images):
    write_images(tmp_path / "src", 2, size=(16, 16))
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / "precious.txt").write_text("mine")
    with pytest.raises(create.DatasetError, match="not a fastprogan partial build"):
        _build(tmp_path / "src", tmp_path / "out")
    assert (tmp_path / "out.partial" / "precious.txt").read_text() == "mine"
