"""The embedded quick-start dataset (real handwritten digits) ships with the package and builds."""

from __future__ import annotations

import numpy as np

from fastprogan.data import default_dataset_source, materialize_default_dataset, open_dataset


def test_embedded_npz_is_small_and_real():
    path = default_dataset_source()
    assert path.name == "digits16.npz" and path.stat().st_size < 1_500_000
    with np.load(path) as npz:
        images, labels = npz["images"], npz["labels"]
    assert images.shape == (1797, 16, 16) and images.dtype == np.uint8
    assert sorted(set(labels.tolist())) == list(range(10))
    assert images.max() == 255 and images.min() == 0
    # Digits are bright strokes on a dark background: the border is dark, the centre is not.
    assert images[:, :, 0].mean() < 20 and images[:, 4:12, 4:12].mean() > 60


def test_materialize_builds_once_through_create(tmp_path):
    out = materialize_default_dataset(tmp_path)
    ds = open_dataset(out)
    assert (ds.num_images, ds.channels, ds.resolutions) == (1797, 1, [4, 8, 16])
    assert ds.manifest["source"]["kind"] == "array"
    mtime = (out / "manifest.json").stat().st_mtime_ns
    assert materialize_default_dataset(tmp_path) == out
    assert (out / "manifest.json").stat().st_mtime_ns == mtime  # reused, not rebuilt
    rgb = open_dataset(materialize_default_dataset(tmp_path, resolution=8, channels=3))
    assert rgb.channels == 3 and rgb.max_resolution == 8
    np.testing.assert_array_equal(rgb.images(8)[:, 0], rgb.images(8)[:, 2])  # gray replicated
