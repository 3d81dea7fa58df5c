"""Exact resume: a run interrupted mid-fade and resumed ends bit-identical to an uninterrupted run."""

import torch

from fastprogan.cli import main
from fastprogan.training.checkpoint import list_checkpoints, load_checkpoint
from fastprogan.training.loop import Trainer
from tests.training.helpers import all_tensors, tiny_config


def test_interrupted_mid_fade_then_resumed_equals_uninterrupted(finished_run, default_dataset, tmp_path):
    run = tmp_path / "run"
    # Same arithmetic as `finished_run`; only the snapshot cadence differs (every tick).
    trainer = Trainer(run, tiny_config(default_dataset, snapshot_ticks=1), progress=False)
    trainer.run(stop_after_ticks=4)  # "killed" right after the tick-4 checkpoint
    interrupted = load_checkpoint(list_checkpoints(run)[-1])
    lod = interrupted["meta"]["lod"]
    assert 0 < lod % 1 < 1, f"the interruption should be mid-fade, lod {lod}"
    assert interrupted["progress"]["nimg"] == 256

    assert main(["train", "--out", str(run), "--resume", "latest", "--no-progress"]) == 0

    resumed = load_checkpoint(list_checkpoints(run)[-1])
    reference = load_checkpoint(list_checkpoints(finished_run)[-1])
    assert resumed["progress"]["nimg"] == reference["progress"]["nimg"] == 768
    for part in ("G", "D", "G_ema", "opt_G", "opt_D", "scaler_G", "scaler_D"):
        ours, theirs = all_tensors(resumed[part]), all_tensors(reference[part])
        assert ours.keys() == theirs.keys(), part
        for name, t in ours.items():
            assert torch.equal(t, theirs[name]), f"{part}.{name} differs after resume"
    assert resumed["loader"] == reference["loader"]
    log = (run / "log.txt").read_text()
    assert "resumed from" in log


def test_resume_refuses_changing_the_arithmetic(finished_run, capsys):
    rc = main(["train", "--out", str(finished_run), "--resume", "latest", "--lr", "0.5", "--no-progress"])
    assert rc == 2
    assert "cannot change lr_base when resuming" in capsys.readouterr().err


def test_resume_with_a_generator_state_of_another_kind_warns_once_and_continues(default_dataset, tmp_path):
    """A checkpoint whose shared-generator state belongs to another kind of generator (here a CUDA
    run's 16-byte Philox state resumed on CPU; on a GPU: the CPU state of builds before the device-side
    draws) resumes with one warning line in log.txt, re-seeded from the saved state."""
    run = tmp_path / "run"
    Trainer(run, tiny_config(default_dataset, snapshot_ticks=1), progress=False).run(stop_after_ticks=1)
    path = list_checkpoints(run)[-1]
    state = torch.load(path, weights_only=False)
    state["rng"]["generators"]["shared"] = torch.arange(16, dtype=torch.uint8)
    state["rng"]["generator_devices"] = {"shared": "cuda", "mirror": "cpu"}
    torch.save(state, path)
    trainer = Trainer(run, tiny_config(default_dataset, snapshot_ticks=1), resume="latest", progress=False)
    trainer.run(stop_after_ticks=1)
    lines = [line for line in (run / "log.txt").read_text().splitlines() if "not bit-identical" in line]
    assert len(lines) == 1 and str(path) in lines[0] and "'shared'" in lines[0], lines
    assert load_checkpoint(list_checkpoints(run)[-1])["progress"]["nimg"] > state["progress"]["nimg"]
