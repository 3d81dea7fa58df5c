"""End to end on CPU: `fastprogan train` on the embedded default dataset (real digits) through
4x4 -> fade -> 8x8 -> fade -> 16x16, then `fastprogan generate` reproduces the grid pixel for pixel."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fastprogan.cli import main
from fastprogan.training.checkpoint import list_checkpoints, load_checkpoint, load_generator


def test_run_leaves_checkpoints_grids_and_logs(finished_run):
    checkpoints = list_checkpoints(finished_run)
    assert 1 <= len(checkpoints) <= 5  # keep=5
    final = load_checkpoint(checkpoints[-1])
    assert final["progress"]["nimg"] == 768 and final["meta"]["lod"] == 0.0
    assert final["meta"]["resolution"] == 16
    assert (finished_run / "grid-latest.png").is_file() and (finished_run / "reals.png").is_file()
    assert Image.open(finished_run / "grid-0000.768.png").size == (4 * 16 + 3 * 2, 4 * 16 + 3 * 2)  # 2px pad
    assert json.loads((finished_run / "config.json").read_text())["resolution"] == 16

    ticks = [json.loads(line) for line in (finished_run / "stats.jsonl").read_text().splitlines()]
    lods = [t["lod"] for t in ticks]
    assert {t["resolution"] for t in ticks} == {4, 8, 16}
    assert any(0 < lod % 1 for lod in lods), "no tick during a fade"
    assert all(np.isfinite(t["d_loss"]) and np.isfinite(t["g_loss"]) for t in ticks)
    log = (finished_run / "log.txt").read_text()
    assert "tick 1 " in log and "sec/kimg" in log and "img/s" in log and "peakmem" in log
    assert "TensorBoard events" in log  # on, or off with the reason


def test_generator_sees_every_resolution_phase(finished_run):
    """Grids were written at 4, 8 and 16 px along the way (images at the active resolution)."""
    sizes = {Image.open(p).size for p in finished_run.glob("grid-0*.png")}
    assert {(22, 22), (38, 38), (70, 70)} <= sizes  # 4x4 grids of 4, 8, 16 px images, 2px between


def test_generate_reproduces_the_training_grid(finished_run, tmp_path):
    final = list_checkpoints(finished_run)[-1]
    out = tmp_path / "gen"
    assert main(["generate", "--checkpoint", str(final), "--seeds", "0-15", "--out", str(out), "--grid"]) == 0
    ours = np.asarray(Image.open(out / "grid.png"))
    train_grid = np.asarray(Image.open(finished_run / "grid-0000.768.png"))
    assert ours.shape == train_grid.shape and np.array_equal(ours, train_grid)
    assert len(list(out.glob("seed-*.png"))) == 16
    assert np.array_equal(np.asarray(Image.open(out / "seed-0005.png")), ours[18:34, 18:34])  # row 1, col 1
    assert Image.open(out / "seed-0005.png").mode == "L"  # the dataset's one channel


def test_load_generator_meta(finished_run):
    G, meta = load_generator(list_checkpoints(finished_run)[-1])
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    for key in ("lod", "resolution", "max_resolution", "num_channels", "latent_size", "kimg", "config"):
        assert key in meta
    assert (meta["resolution"], meta["max_resolution"], meta["num_channels"]) == (16, 16, 1)
    assert G(torch.zeros(2, meta["latent_size"]), meta["lod"]).shape == (2, 1, 16, 16)


def test_metrics_command_on_a_run_directory(finished_run, default_dataset, tmp_path, capsys):
    """`fastprogan metrics` reads the run's newest checkpoint and the dataset: SWD, floor and MS-SSIM."""
    from fastprogan.cli import main

    out = tmp_path / "metrics.json"
    args = [
        "metrics",
        "--checkpoint",
        str(finished_run),
        "--data",
        str(default_dataset),
        "--metrics",
        "swd,msssim",
        "--num-images",
        "64",
        "--num-pairs",
        "16",
        "--batch-size",
        "32",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["swd"]["mean"] > 0 and result["swd_real_floor"]["mean"] >= 0
    assert 0.0 <= result["msssim"] <= 1.0
    assert result["generator"]["path"] == str(list_checkpoints(finished_run)[-1])
    assert main(["metrics", "--checkpoint", str(tmp_path / "missing"), "--data", str(default_dataset)]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err


def test_tensorboard_events_hold_the_tick_scalars(finished_run):
    pytest.importorskip("tensorboard", reason="tensorboard (in the test extra) reads the event files back")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(finished_run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"d_loss", "g_loss", "lod"} <= {t.split("/")[-1] for t in tags}, tags
    ticks = [json.loads(line) for line in (finished_run / "stats.jsonl").read_text().splitlines()]
    lod_tag = next(t for t in tags if t.split("/")[-1] == "lod")
    assert [e.value for e in acc.Scalars(lod_tag)] == pytest.approx([t["lod"] for t in ticks])


def test_tensorboard_events_hold_the_image_grids(finished_run):
    pytest.importorskip("tensorboard", reason="tensorboard (in the test extra) reads the event files back")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(finished_run / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert {"images/fakes", "images/reals"} <= set(acc.Tags()["images"])
    fakes = acc.Images("images/fakes")
    ticks = [json.loads(line) for line in (finished_run / "stats.jsonl").read_text().splitlines()]
    assert len(fakes) >= len(ticks)  # at least one grid per tick (image_snapshot_ticks=1)
    last = fakes[-1]
    assert last.step == 768 and (last.width, last.height) == (70, 70)
    import io

    decoded = np.asarray(Image.open(io.BytesIO(last.encoded_image_string)).convert("L"))
    assert np.array_equal(decoded, np.asarray(Image.open(finished_run / "grid-0000.768.png")))
