"""`fastprogan generate`: --device auto, --batch, --precision, --grid-pad, --interpolate/--frames/--slerp."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastprogan.cli import build_parser, main
from fastprogan.training.generate_cli import resolve_device
from fastprogan.training.images import latents_for_seeds
from fastprogan.training.latents import interpolation_path


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int16)


def _gen(run, out, *extra) -> None:
    assert main(["generate", "--checkpoint", str(run), "--out", str(out), *extra]) == 0


def test_device_auto_is_the_default_and_picks_cuda_when_available(monkeypatch):
    args = build_parser().parse_args(["generate", "--checkpoint", "x", "--out", "y"])
    assert args.device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_batch_does_not_change_the_images(finished_run, tmp_path, capsys):
    _gen(finished_run, tmp_path / "a", "--seeds", "0-6")
    _gen(finished_run, tmp_path / "b", "--seeds", "0-6", "--batch", "3")
    for i in range(7):
        a, b = _png(tmp_path / "a" / f"seed-{i:04d}.png"), _png(tmp_path / "b" / f"seed-{i:04d}.png")
        assert np.abs(a - b).max() <= 1  # batch-size-dependent conv summation order at most
    assert main(["generate", "--checkpoint", str(finished_run), "--out", str(tmp_path), "--batch", "0"]) == 2
    assert "--batch 0" in capsys.readouterr().err


def test_precision_bf16_is_close_to_fp32(finished_run, tmp_path, capsys):
    _gen(finished_run, tmp_path / "a", "--seeds", "0-7")
    _gen(finished_run, tmp_path / "b", "--seeds", "0-7", "--precision", "bf16")
    a = np.stack([_png(tmp_path / "a" / f"seed-{i:04d}.png") for i in range(8)])
    b = np.stack([_png(tmp_path / "b" / f"seed-{i:04d}.png") for i in range(8)])
    diff = np.abs(a - b)
    assert diff.max() > 0  # bf16 really ran
    assert diff.mean() < 4  # and stayed close (uint8 scale)
    assert (
        main(["generate", "--checkpoint", str(finished_run), "--out", str(tmp_path), "--precision", "fp8"])
        == 2
    )
    assert "precision" in capsys.readouterr().err


@pytest.mark.parametrize("pad", [0, 5])
def test_grid_pad(finished_run, tmp_path, pad):
    _gen(finished_run, tmp_path, "--seeds", "0-3", "--grid", "--grid-pad", str(pad))
    grid = _png(tmp_path / "grid.png")
    assert grid.shape == (2 * 16 + pad, 2 * 16 + pad)
    assert np.array_equal(grid[16 + pad :, 16 + pad :], _png(tmp_path / "seed-0003.png"))
    if pad:
        assert (grid[16 : 16 + pad] == 255).all() and (grid[:, 16 : 16 + pad] == 255).all()


def test_interpolation_endpoints_equal_plain_generate(finished_run, tmp_path):
    _gen(finished_run, tmp_path / "plain", "--seeds", "3,7,11")
    _gen(finished_run, tmp_path / "lin", "--interpolate", "3,7,11", "--frames", "5")
    frames = sorted((tmp_path / "lin").glob("frame-*.png"))
    assert len(frames) == 2 * 4 + 1  # two segments of 5 frames sharing the middle one
    for index, seed in ((0, 3), (4, 7), (8, 11)):
        assert np.array_equal(_png(frames[index]), _png(tmp_path / "plain" / f"seed-{seed:04d}.png"))
    strip = _png(tmp_path / "lin" / "strip.png")
    assert strip.shape == (16, 9 * 16 + 8 * 2)
    assert np.array_equal(strip[:, 4 * 18 : 4 * 18 + 16], _png(frames[4]))
    assert not np.array_equal(_png(frames[1]), _png(frames[0]))  # it moves

    _gen(finished_run, tmp_path / "slerp", "--interpolate", "3,7", "--frames", "5", "--slerp")
    s_frames = sorted((tmp_path / "slerp").glob("frame-*.png"))
    assert len(s_frames) == 5
    assert np.array_equal(_png(s_frames[0]), _png(frames[0])) and np.array_equal(
        _png(s_frames[4]), _png(frames[4])
    )


def test_interpolation_path_math():
    keys = latents_for_seeds([1, 2], 64)
    unit = keys / keys.square().mean(1, keepdim=True).sqrt()
    lin = interpolation_path(keys, 5)
    torch.testing.assert_close(lin[2], 0.5 * (unit[0] + unit[1]), rtol=1e-5, atol=1e-6)
    assert torch.equal(lin[0], keys[0]) and torch.equal(lin[4], keys[1])
    sl = interpolation_path(keys, 5, slerp=True)
    # slerp keeps the norm of the (equal-norm) normalised endpoints; lerp shrinks it in the middle
    assert sl[2].norm() == pytest.approx(unit[0].norm().item(), rel=1e-5)
    assert lin[2].norm() < 0.9 * unit[0].norm()


def test_interpolation_errors(finished_run, tmp_path, capsys):
    base = ["generate", "--checkpoint", str(finished_run), "--out", str(tmp_path)]
    assert main([*base, "--interpolate", "3"]) == 2
    assert "at least two seeds" in capsys.readouterr().err
    assert main([*base, "--interpolate", "3,4", "--frames", "1"]) == 2
    assert "--frames 1" in capsys.readouterr().err
