"""`train --data DS` without `--resolution`: the dataset's resolution is the top one, and a note says so."""

from __future__ import annotations

import json

import numpy as np

from fastprogan.cli import main


def _dataset(root, res):
    from fastprogan.data import create_dataset

    images = np.random.default_rng(0).integers(0, 256, (40, res, res, 1)).astype(np.uint8)
    np.save(root / f"src{res}.npy", images)
    return create_dataset(
        root / f"src{res}.npy", root / f"ds{res}", res, channels=1, progress=False, log=lambda m: None
    )


def test_data_without_resolution_trains_up_to_the_dataset(tmp_path, capsys):
    ds = _dataset(tmp_path, 32)
    run = tmp_path / "run"
    base = ["train", "--data", str(ds), "--total-kimg", "0", "--no-progress", "--num-workers", "0"]
    assert main([*base, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "note: --data without --resolution: training up to the dataset's 32px" in out
    assert "preset quickstart says 16px" in out
    assert json.loads((run / "config.json").read_text())["resolution"] == 32

    run2 = tmp_path / "run2"
    assert main([*base, "--out", str(run2), "--resolution", "8"]) == 0  # an explicit --resolution wins
    assert "note: --data" not in capsys.readouterr().out
    assert json.loads((run2 / "config.json").read_text())["resolution"] == 8
