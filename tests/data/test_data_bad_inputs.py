"""Every bad-input case: an error naming the file, or the documented conversion / skip."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fastprogan.data import DatasetError, create_dataset, open_dataset


def _create(src, out, resolution=16, **kw):
    return create_dataset(src, out, resolution, progress=False, log=lambda _m: None, **kw)


def _png_bytes(arr, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, **kw).save(buf, format="PNG")
    return buf.getvalue()


def _only_image(out) -> np.ndarray:
    ds = open_dataset(out)
    assert ds.num_images == 1
    return np.asarray(ds.images(ds.max_resolution)[0])  # [C, R, R]


@pytest.fixture
def good(tmp_path, write_images):
    """A source folder with 3 good 16x16 RGB PNGs."""
    write_images(tmp_path / "src", 3, size=(16, 16))
    return tmp_path / "src"


def _add_bad(folder, name, data: bytes):
    (folder / name).write_bytes(data)
    return folder / name


def test_truncated_png_errors_naming_the_file_and_leaves_no_dataset(tmp_path, good):
    full = _png_bytes(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    _add_bad(good, "broken.png", full[: len(full) // 2])
    with pytest.raises(DatasetError, match=r"broken\.png: corrupt or truncated"):
        _create(good, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_random_bytes_named_png_is_not_an_image(tmp_path, good):
    _add_bad(good, "noise.png", np.random.default_rng(0).bytes(500))
    with pytest.raises(DatasetError, match=r"noise\.png: not an image file"):
        _create(good, tmp_path / "out")


def test_skip_bad_lists_bad_files_in_manifest_and_prints_them(tmp_path, good):
    full = _png_bytes(np.zeros((16, 16, 3), np.uint8))
    _add_bad(good, "broken.png", full[: len(full) // 2])
    _add_bad(good, "noise.png", b"\x00not an image at all" * 10)
    messages = []
    out = create_dataset(good, tmp_path / "out", 16, skip_bad=True, progress=False, log=messages.append)
    m = open_dataset(out).manifest
    assert m["count"] == 3
    assert sorted(b["name"] for b in m["skipped"]) == ["broken.png", "noise.png"]
    assert all(b["name"] in b["error"] for b in m["skipped"])
    assert sum("skipped" in msg for msg in messages) == 2


def test_non_image_extension_is_ignored_and_listed(tmp_path, good):
    (good / "notes.txt").write_text("not an image")
    m = open_dataset(_create(good, tmp_path / "out")).manifest
    assert m["count"] == 3 and m["ignored"] == ["notes.txt"]


def test_image_smaller_than_resolution(tmp_path):
    (tmp_path / "src").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "src" / "tiny.png")
    with pytest.raises(DatasetError, match=r"tiny\.png: image is 8x8, smaller than the resolution 16"):
        _create(tmp_path / "src", tmp_path / "out")


def test_non_square_errors_unless_center_crop(tmp_path):
    (tmp_path / "src").mkdir()
    arr = np.random.default_rng(3).integers(0, 256, (16, 24, 3), dtype=np.uint8)  # h=16, w=24
    Image.fromarray(arr).save(tmp_path / "src" / "wide.png")
    with pytest.raises(DatasetError, match=r"wide\.png: image is not square \(24x16\)"):
        _create(tmp_path / "src", tmp_path / "out")
    got = _only_image(_create(tmp_path / "src", tmp_path / "out", transform="center-crop"))
    np.testing.assert_array_equal(got, arr[:, 4:20].transpose(2, 0, 1))


def test_larger_images_are_resized_with_lanczos(tmp_path):
    (tmp_path / "src").mkdir()
    arr = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "src" / "big.png")
    got = _only_image(_create(tmp_path / "src", tmp_path / "out"))
    expect = np.asarray(Image.fromarray(arr).resize((16, 16), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(got, expect.transpose(2, 0, 1))


def test_mixed_grayscale_and_rgb(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(5)
    gray = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(gray).save(src / "a_gray.png")
    Image.fromarray(rgb).save(src / "b_rgb.png")
    for channels in (3, 1):
        ds = open_dataset(_create(src, tmp_path / f"out{channels}", channels=channels))
        by_name = {e["name"]: ds.images(16)[i] for i, e in enumerate(ds.manifest["images"])}
        if channels == 3:
            np.testing.assert_array_equal(by_name["a_gray.png"], np.stack([gray] * 3))  # replicated
            np.testing.assert_array_equal(by_name["b_rgb.png"], rgb.transpose(2, 0, 1))
        else:
            np.testing.assert_array_equal(by_name["a_gray.png"][0], gray)
            luma = np.asarray(Image.fromarray(rgb).convert("L"))
            np.testing.assert_array_equal(by_name["b_rgb.png"][0], luma)


def test_rgba_is_composited_on_black(tmp_path):
    (tmp_path / "src").mkdir()
    rgba = np.random.default_rng(6).integers(0, 256, (16, 16, 4), dtype=np.uint8)
    rgba[0, 0] = [200, 100, 50, 0]  # fully transparent -> black
    rgba[0, 1] = [200, 100, 50, 255]  # opaque -> unchanged
    Image.fromarray(rgba).save(tmp_path / "src" / "alpha.png")
    got = _only_image(_create(tmp_path / "src", tmp_path / "out"))  # [3, 16, 16]
    expect = (rgba[..., :3].astype(np.uint32) * rgba[..., 3:] + 127) // 255
    np.testing.assert_array_equal(got, expect.astype(np.uint8).transpose(2, 0, 1))
    assert got[:, 0, 0].tolist() == [0, 0, 0] and got[:, 0, 1].tolist() == [200, 100, 50]


def test_palette_image_is_converted(tmp_path):
    (tmp_path / "src").mkdir()
    rgb = np.random.default_rng(7).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).quantize(colors=16)
    assert pal.mode == "P"
    pal.save(tmp_path / "src" / "pal.png")
    got = _only_image(_create(tmp_path / "src", tmp_path / "out"))
    np.testing.assert_array_equal(got, np.asarray(pal.convert("RGB")).transpose(2, 0, 1))


def test_16bit_png_keeps_the_high_byte(tmp_path):
    (tmp_path / "src").mkdir()
    arr = np.random.default_rng(8).integers(0, 65536, (16, 16), dtype=np.uint16)
    arr[0, 0], arr[0, 1] = 40000, 65535
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    img.save(tmp_path / "src" / "deep.png")
    got = _only_image(_create(tmp_path / "src", tmp_path / "out", channels=1))
    np.testing.assert_array_equal(got[0], (arr >> 8).astype(np.uint8))
    assert got[0, 0, 0] == 156 and got[0, 0, 1] == 255  # scaled, not clipped to 255


def test_exif_rotation_is_applied(tmp_path):
    (tmp_path / "src").mkdir()
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[:, :8] = 255  # stored: left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: display rotated 90 degrees clockwise
    Image.fromarray(arr).save(tmp_path / "src" / "rot.jpg", exif=exif, quality=95)
    got = _only_image(_create(tmp_path / "src", tmp_path / "out")).astype(int)
    expect = np.rot90(arr, k=-1).transpose(2, 0, 1).astype(int)  # top half white
    assert np.abs(got - expect).mean() < 8
    assert np.abs(got - arr.transpose(2, 0, 1).astype(int)).mean() > 60


def test_empty_source(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty.*empty source"):
        _create(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"empty source, no images found \(1 non-image"):
        _create(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_source_and_bad_options(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        _create(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "src").mkdir()
    with pytest.raises(DatasetError, match="channels must be 1 or 3"):
        _create(tmp_path / "src", tmp_path / "out", channels=2)
    with pytest.raises(ValueError, match="power of two"):
        _create(tmp_path / "src", tmp_path / "out", resolution=24)


def test_bad_array_sources(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(DatasetError, match=r"f\.npy: array dtype is float32"):
        _create(tmp_path / "f.npy", tmp_path / "out", resolution=8)
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 8, 8), np.uint8), b=np.zeros(2, np.uint8))
    with pytest.raises(DatasetError, match=r"two\.npz: .npz holds"):
        _create(tmp_path / "two.npz", tmp_path / "out", resolution=8)


def test_existing_out_needs_overwrite_and_survives_a_failed_rebuild(tmp_path, good):
    out = _create(good, tmp_path / "out")
    before = (out / "res_0016.npy").read_bytes()
    with pytest.raises(DatasetError, match=r"out: already exists; pass --overwrite"):
        _create(good, out)
    _add_bad(good, "noise.png", b"garbage" * 20)
    with pytest.raises(DatasetError, match=r"noise\.png"):
        _create(good, out, overwrite=True)
    assert (out / "res_0016.npy").read_bytes() == before  # the finished dataset is untouched
    assert open_dataset(out).num_images == 3
    replaced = _create(good, out, overwrite=True, skip_bad=True, channels=1)
    assert open_dataset(replaced).channels == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no partial or old copy left
