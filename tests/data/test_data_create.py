"""Round trips: generated PNG/JPEG files, folders and zips -> pyramid files equal to a numpy reference."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from fastprogan.data import create_dataset, open_dataset, verify_dataset
from fastprogan.data.pyramid import build_pyramid, resolutions_for


def _quiet(**kw):
    return {"progress": False, "log": lambda _m: None, **kw}


def test_build_pyramid_matches_reference_and_rounds_only_on_write(ref_pyramid):
    rng = np.random.default_rng(1)
    top = rng.integers(0, 256, (50, 3, 32, 32), dtype=np.uint8)
    ours = build_pyramid(top)
    ref = ref_pyramid(top)
    assert sorted(ours) == [4, 8, 16, 32]
    for r in ref:
        np.testing.assert_array_equal(ours[r], ref[r])
    # The reference is discriminating: re-rounding each level before the next gives other data.
    naive = build_pyramid(ours[16])
    assert any(not np.array_equal(naive[r], ours[r]) for r in (4, 8))


def test_resolutions_for_rejects_non_powers_of_two():
    assert resolutions_for(32) == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="power of two"):
        resolutions_for(48)


@pytest.mark.parametrize(("resolution", "channels"), [(32, 3), (16, 3), (32, 1), (8, 1)])
def test_png_folder_round_trip(tmp_path, write_images, ref_pyramid, resolution, channels):
    written = write_images(tmp_path / "src", 7, size=(32, 32))
    out = create_dataset(tmp_path / "src", tmp_path / "ds", resolution, channels=channels, **_quiet())
    ds = open_dataset(out)
    assert (ds.num_images, ds.channels, ds.resolutions) == (7, channels, resolutions_for(resolution))
    assert ds.max_resolution == resolution
    names = [e["name"] for e in ds.manifest["images"]]
    assert sorted(names) == sorted(written)
    for i, name in enumerate(names):
        img = Image.fromarray(written[name])
        if channels == 1:
            img = img.convert("L")
        if resolution != 32:
            img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
        expect = np.asarray(img).reshape(resolution, resolution, channels).transpose(2, 0, 1)
        for r, level in ref_pyramid(np.ascontiguousarray(expect)).items():
            got = ds.images(r)[i]
            assert got.dtype == np.uint8 and got.shape == (channels, r, r)
            np.testing.assert_array_equal(got, level, err_msg=f"{name} at {r}")
    assert verify_dataset(out, deep=True) == []


def test_order_is_a_seeded_shuffle_and_deterministic(tmp_path, write_images):
    write_images(tmp_path / "src", 12, size=(8, 8))
    a = open_dataset(create_dataset(tmp_path / "src", tmp_path / "a", 8, seed=5, **_quiet()))
    b = open_dataset(create_dataset(tmp_path / "src", tmp_path / "b", 8, seed=5, workers=2, **_quiet()))
    c = open_dataset(create_dataset(tmp_path / "src", tmp_path / "c", 8, seed=6, **_quiet()))
    names = [e["name"] for e in a.manifest["images"]]
    assert names == [e["name"] for e in b.manifest["images"]]
    assert names != sorted(names)  # shuffled
    assert names != [e["name"] for e in c.manifest["images"]]
    for r in a.resolutions:
        np.testing.assert_array_equal(a.images(r), b.images(r))
    assert a.manifest["order"]["shuffle_seed"] == 5


def test_jpeg_zip_equals_jpeg_folder(tmp_path, write_images):
    written = write_images(tmp_path / "src", 5, size=(16, 16), ext="jpg")
    zpath = tmp_path / "src.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name in written:
            z.write(tmp_path / "src" / name, arcname=name)
    folder = open_dataset(create_dataset(tmp_path / "src", tmp_path / "f", 16, **_quiet()))
    zipped = open_dataset(create_dataset(zpath, tmp_path / "z", 16, **_quiet()))
    assert zipped.manifest["source"]["kind"] == "zip"
    assert folder.manifest["images"] == zipped.manifest["images"]
    for r in folder.resolutions:
        np.testing.assert_array_equal(folder.images(r), zipped.images(r))
    # JPEG decodes close to (not exactly) the source pixels.
    first = folder.manifest["images"][0]["name"]
    diff = np.abs(folder.images(16)[0].transpose(1, 2, 0).astype(int) - written[first].astype(int))
    assert diff.mean() < 4


def test_npy_and_npz_sources(tmp_path, ref_pyramid):
    rng = np.random.default_rng(2)
    arr = rng.integers(0, 256, (9, 16, 16, 3), dtype=np.uint8)  # [N, H, W, C]
    np.save(tmp_path / "a.npy", arr)
    np.savez_compressed(tmp_path / "a.npz", images=arr, labels=np.arange(9))
    for src in ("a.npy", "a.npz"):
        ds = open_dataset(create_dataset(tmp_path / src, tmp_path / f"ds_{src}", 16, **_quiet()))
        for i, entry in enumerate(ds.manifest["images"]):
            k = int(entry["name"].split("[")[1].rstrip("]"))
            np.testing.assert_array_equal(ds.images(16)[i], arr[k].transpose(2, 0, 1))
            np.testing.assert_array_equal(ds.images(4)[i], ref_pyramid(arr[k].transpose(2, 0, 1))[4])


def test_max_images_keeps_the_first_n_of_the_shuffle(tmp_path, write_images):
    write_images(tmp_path / "src", 10, size=(8, 8))
    full = open_dataset(create_dataset(tmp_path / "src", tmp_path / "full", 8, **_quiet()))
    part = open_dataset(create_dataset(tmp_path / "src", tmp_path / "part", 8, max_images=4, **_quiet()))
    assert part.num_images == 4
    assert part.manifest["images"] == full.manifest["images"][:4]
    np.testing.assert_array_equal(part.images(8), full.images(8)[:4])


def test_manifest_fields(tmp_path, write_images):
    import fastprogan

    write_images(tmp_path / "src", 3, size=(8, 8))
    out = create_dataset(tmp_path / "src", tmp_path / "ds", 8, channels=1, **_quiet())
    m = json.loads((out / "manifest.json").read_text())
    assert m["tool_version"] == fastprogan.__version__
    assert m["count"] == 3 and m["channels"] == 1 and m["resolutions"] == [4, 8]
    assert m["options"]["transform"] == "none" and m["options"]["seed"] == 0
    assert all(len(e["sha256"]) == 64 for e in m["images"])
    assert set(m["files"]) == {"4", "8"}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "res_0004.npy", "res_0008.npy"]


@pytest.mark.parametrize("resolution", [4, 16])
def test_verify_catches_a_flipped_byte(tmp_path, write_images, resolution):
    write_images(tmp_path / "src", 4, size=(16, 16))
    out = create_dataset(tmp_path / "src", tmp_path / "ds", 16, **_quiet())
    assert verify_dataset(out) == []
    f = out / f"res_{resolution:04d}.npy"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01
    f.write_bytes(bytes(data))
    problems = verify_dataset(out)
    assert problems and any(f.name in p and "sha256" in p for p in problems)


def test_verify_catches_wrong_shape_and_missing_file(tmp_path, write_images):
    write_images(tmp_path / "src", 4, size=(8, 8))
    out = create_dataset(tmp_path / "src", tmp_path / "ds", 8, **_quiet())
    np.save(out / "res_0004.npy", np.zeros((3, 3, 4, 4), np.uint8))
    (out / "res_0008.npy").unlink()
    problems = verify_dataset(out)
    assert any("res_0004.npy" in p and "(3, 3, 4, 4)" in p for p in problems)
    assert any("res_0008.npy" in p and "missing" in p for p in problems)
