"""Robust runs (issue 12): run directories, end-of-phase lod, relocation, byte-identical checkpoints,
progress reporting, --resume auto and SIGTERM. Each test fails on the code before the fix."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastprogan.cli import main
from fastprogan.training import checkpoint as ckpt
from fastprogan.training.feedback import Feedback
from fastprogan.training.images import GRID_PAD
from fastprogan.training.loop import Trainer
from tests.training.helpers import tiny_cli_args, tiny_config


def _stats(run):
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


# ---- 1. an --out holding another run ----------------------------------------------------------------


def test_out_holding_another_run_is_refused(finished_run, default_dataset, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()}
    rc = main(["train", "--out", str(finished_run), *tiny_cli_args(default_dataset, seed=4)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "already holds another run" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()} == before  # untouched


def test_overwrite_replaces_the_run_and_pruning_keeps_the_new_checkpoints(
    finished_run, default_dataset, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)  # checkpoints up to nimg 768 of the old run
    args = tiny_cli_args(default_dataset, total_kimg=0.256, snapshot_ticks=1, keep=2, seed=4)
    assert main(["train", "--out", str(run), *args, "--overwrite"]) == 0
    # Only the new run's newest two checkpoints; none of the old run's (nimg 768 would have survived
    # keep-last-K by nimg and pruned the new run's own).
    assert [p.name for p in ckpt.list_checkpoints(run)] == [ckpt.checkpoint_name(n) for n in (192, 256)]
    assert ckpt.load_checkpoint(run / ckpt.checkpoint_name(256))["config"]["seed"] == 4
    log = (run / "log.txt").read_text()
    assert log.count("fastprogan train: new run") == 1 and "tick 5 " not in log  # the old log is gone


def test_pruning_never_deletes_a_checkpoint_of_the_current_run(tmp_path):
    state = {"G": {"w": torch.zeros(1)}}
    ckpt.save_checkpoint(state, tmp_path, 5000, keep=2)  # a foreign, newer-named checkpoint
    for nimg in (100, 200, 300):
        ckpt.save_checkpoint(state, tmp_path, nimg, keep=2)
    names = {p.name for p in ckpt.list_checkpoints(tmp_path)}
    assert names == {ckpt.checkpoint_name(n) for n in (200, 300, 5000)}


# ---- 2. end-of-phase checkpoints record the lod they were trained at ----------------------------


def test_end_of_phase_checkpoint_records_the_trained_lod(default_dataset, tmp_path):
    # Rounds of 64 images; the 4x4 stable phase ends at 100 images, inside the round 64..128. That
    # round trained at lod 2 (4x4); the schedule at nimg - 1 = 127 already says lod 1.86 (8x8).
    cfg = tiny_config(default_dataset, lod_training_kimg=0.1, total_kimg=0.192, snapshot_ticks=0)
    Trainer(tmp_path, cfg, progress=False).run()
    meta = ckpt.load_checkpoint(tmp_path / ckpt.checkpoint_name(128))["meta"]
    assert (meta["lod"], meta["resolution"]) == (2.0, 4)
    from PIL import Image

    side = 4 * 4 + 3 * GRID_PAD  # a 4x4 grid of 4px images, GRID_PAD px between cells
    assert Image.open(tmp_path / "grid-0000.128.png").size == (side, side)


# ---- 3. relocatable run directories ------------------------------------------------------------------


def test_run_directory_can_move_and_resume_from_another_cwd(default_dataset, tmp_path, monkeypatch):
    first = tmp_path / "first"
    shutil.copytree(default_dataset, first / "dataset")  # a dataset inside the run directory
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config("first/dataset", total_kimg=0.256, snapshot_ticks=1)  # relative to the cwd
    Trainer("first", cfg, progress=False).run(stop_after_ticks=2)
    assert json.loads((first / "config.json").read_text())["data"] == "dataset"
    assert ckpt.load_checkpoint(ckpt.list_checkpoints(first)[-1])["config"]["data"] == "dataset"

    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    first.rename(moved)
    monkeypatch.chdir(moved.parent.parent.parent)  # neither the old nor the new parent
    assert main(["train", "--out", str(moved), "--resume", "latest", "--no-progress"]) == 0
    log = (moved / "log.txt").read_text()
    assert f"dataset {(moved / 'dataset').resolve()} (from checkpoint-000000128.pt)" in log
    assert ckpt.load_checkpoint(ckpt.list_checkpoints(moved)[-1])["progress"]["nimg"] == 256


def test_dataset_outside_the_run_is_stored_absolute(default_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(default_dataset.parent)
    cfg = tiny_config(default_dataset.name, total_kimg=0.064)  # relative to the cwd
    Trainer(tmp_path / "run", cfg, progress=False).run()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == str(
        default_dataset.resolve()
    )


# ---- 6. --seed determines everything: byte-identical checkpoints ------------------------------------


def test_same_command_twice_writes_byte_identical_checkpoints(default_dataset, tmp_path):
    args = tiny_cli_args(default_dataset, total_kimg=0.192, snapshot_ticks=1)
    for name in ("a", "b"):
        assert main(["train", "--out", str(tmp_path / name), *args]) == 0
    a, b = ckpt.list_checkpoints(tmp_path / "a"), ckpt.list_checkpoints(tmp_path / "b")
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 3
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), f"{pa.name} differs between two identical runs"
    # No wall-clock value in the checkpoint; the resumed run takes its time from stats.jsonl.
    assert "elapsed_s" not in ckpt.load_checkpoint(a[-1])["progress"]


# ---- 8. progress reporting ------------------------------------------------------------------------


def test_first_tick_after_resume_counts_only_this_processes_images(default_dataset, tmp_path):
    # Ticks every 128 images, a checkpoint every 64 (mid-tick).
    cfg = tiny_config(
        default_dataset, tick_kimg_base=0.128, snapshot_kimg=0.064, snapshot_ticks=0, total_kimg=0.192
    )
    Trainer(tmp_path / "a", cfg, progress=False).run()
    start = tmp_path / "a" / ckpt.checkpoint_name(64)
    Trainer(tmp_path / "b", resume=str(start), progress=False).run()
    first = _stats(tmp_path / "b")[0]
    assert first["kimg"] == 0.128
    # 64 images trained in this process before the first tick (not the 128 since the tick began).
    assert first["images_per_s"] * first["sec_per_tick"] == pytest.approx(64, rel=1e-6)
    assert first["sec_per_kimg"] * 0.064 == pytest.approx(first["sec_per_tick"], rel=1e-6)


def test_ctrl_c_is_recorded_in_the_log(default_dataset, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = Trainer._train_round

    def interrupted_round(self, phase):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, phase)

    monkeypatch.setattr(Trainer, "_train_round", interrupted_round)
    assert main(["train", "--out", str(tmp_path), *tiny_cli_args(default_dataset, snapshot_ticks=1)]) == 130
    log = (tmp_path / "log.txt").read_text().splitlines()
    assert log[-1].startswith("interrupted (Ctrl-C) at kimg 0.128") and "checkpoint-000000128.pt" in log[-1]


def test_resuming_a_finished_run_says_so(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert main(["train", "--out", str(run), "--resume", "latest", "--no-progress"]) == 0
    last = (run / "log.txt").read_text().splitlines()[-1]
    assert last.startswith("run already finished: 0.768 kimg trained of total_kimg 0.768")
    assert "checkpoint-000000768.pt" in last and "None" not in last


def test_progress_bar_rounds_kimg_and_stops_at_100_percent(tmp_path, capsys):
    fb = Feedback(tmp_path, enabled=True, progress=True, total_kimg=2.2)
    for kimg in (0.64, 1.28, 1.92, 2.56):  # the last round overshoots total_kimg
        fb.advance(kimg)
        if kimg == 1.92:
            assert fb._bar.n == 1.92 and "1.92/2.2" in str(fb._bar)
    assert fb._bar.n == 2.2 and "2.2/2.2" in str(fb._bar) and "100%" in str(fb._bar)
    fb.close()
    assert "0000000" not in capsys.readouterr().err


# ---- 9. --resume auto and SIGTERM -------------------------------------------------------------------


def test_resume_auto_starts_then_continues(default_dataset, tmp_path):
    args = [
        "train",
        "--out",
        str(tmp_path),
        "--resume",
        "auto",
        *tiny_cli_args(default_dataset, total_kimg=0.128),
    ]
    assert main(args) == 0
    assert "fastprogan train: new run" in (tmp_path / "log.txt").read_text()
    # The restart repeats the whole command line (same values are no change), with a longer total.
    assert main([*args, "--set", "total_kimg=0.192"]) == 0
    log = (tmp_path / "log.txt").read_text()
    assert "resumed from" in log and "checkpoint-000000128.pt" in log
    assert ckpt.list_checkpoints(tmp_path)[-1].name == ckpt.checkpoint_name(192)


def test_sigterm_writes_a_checkpoint_then_exits(default_dataset, tmp_path):
    run = tmp_path / "run"
    args = tiny_cli_args(default_dataset, total_kimg=100.0, snapshot_ticks=0, image_snapshot_ticks=0)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastprogan", "train", "--out", str(run), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not ((run / "stats.jsonl").exists() and (run / "stats.jsonl").read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    assert took < 30, f"took {took:.1f} s to stop"  # one round + one checkpoint write (tiny: < 1 s)
    latest = ckpt.list_checkpoints(run)[-1]
    nimg = ckpt.load_checkpoint(latest)["progress"]["nimg"]
    assert nimg >= 64 and nimg % 64 == 0  # between rounds
    assert "interrupted by SIGTERM" in (run / "log.txt").read_text().splitlines()[-1]


# ---- 7. the loader's order is global: any world size continues the same sequence -----------------


def test_loader_order_is_global_and_continues_on_another_world_size(default_dataset):
    from fastprogan.data import ImageLoader, open_dataset

    ds = open_dataset(default_dataset)
    one = ImageLoader(ds, 4, 16, seed=7)
    two = [ImageLoader(ds, 4, 8, seed=7, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        merged = torch.stack([next(two[0]), next(two[1])], 1).flatten(0, 1)  # rank r = samples r::2
        assert torch.equal(merged, next(one))
    assert two[0].state_dict() == two[1].state_dict() == one.state_dict()  # one state for the job
    four = [ImageLoader(ds, 4, 4, seed=0, rank=r, world_size=4, start=two[0].state_dict()) for r in range(4)]
    merged = torch.stack([next(loader) for loader in four], 1).flatten(0, 1)
    assert torch.equal(merged, next(one))


def test_older_per_rank_rng_states(tmp_path):
    """Older checkpoints stored one RNG entry per process: one process loads, several are refused."""
    gen = {"shared": torch.Generator().manual_seed(1)}
    entry = ckpt.capture_rng_state(gen)
    assert ckpt.rng_state_of([entry], tmp_path / "old.pt") is entry
    assert ckpt.rng_state_of(entry, tmp_path / "new.pt") is entry
    with pytest.raises(
        ckpt.CheckpointError, match=r"old\.pt: written by an older fastprogan .* \(2 processes\)"
    ):
        ckpt.rng_state_of([entry, entry], tmp_path / "old.pt")
