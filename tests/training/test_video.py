"""`fastprogan video`: the official smoothed random walk, MP4 through imageio-ffmpeg, GIF fallback."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from fastprogan.cli import main
from fastprogan.training.latents import gaussian_filter_wrap, smoothed_random_walk
from fastprogan.training.video import ffmpeg_missing


def test_gaussian_filter_matches_scipy_wrap():
    ndimage = pytest.importorskip("scipy.ndimage", reason="scipy (in the test extra) is the oracle")
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sigma in (0.7, 3.0, 30.0):  # 30: the kernel is wider than the sequence (wraps more than once)
        expected = ndimage.gaussian_filter1d(x.numpy(), sigma, axis=0, mode="wrap")
        np.testing.assert_allclose(gaussian_filter_wrap(x, sigma).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_smoothed_random_walk_is_official_style():
    z = smoothed_random_walk(90, 16, fps=30, smoothing_sec=1.0, seed=5)
    assert z.shape == (90, 16) and z.dtype == torch.float32
    assert float(z.square().mean()) == pytest.approx(1.0, rel=1e-5)  # normalised by the global RMS
    assert torch.equal(z, smoothed_random_walk(90, 16, fps=30, smoothing_sec=1.0, seed=5))
    step = (z[1:] - z[:-1]).norm(dim=1).mean()
    raw = torch.randn(90, 16, generator=torch.Generator().manual_seed(5))
    assert step < 0.2 * (raw[1:] - raw[:-1]).norm(dim=1).mean()  # smooth over time
    assert (z[0] - z[-1]).norm() < 3 * step  # periodic: the video loops


def test_video_mp4_reads_back(finished_run, tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg (the video extra, in the test extra)")
    import imageio.v2 as imageio

    assert ffmpeg_missing() is None
    out = tmp_path / "walk.mp4"
    args = ["video", "--checkpoint", str(finished_run), "--out", str(out), "--seconds", "1", "--fps", "12"]
    assert main(args) == 0
    frames = imageio.mimread(str(out), format="FFMPEG")
    assert len(frames) == 12 and frames[0].shape == (16, 16, 3)
    assert not list(tmp_path.glob(".*tmp*"))


def test_video_falls_back_to_gif_without_ffmpeg(finished_run, tmp_path, monkeypatch, capsys):
    pytest.importorskip("imageio", reason="imageio reads the GIF back")
    import imageio.v2 as imageio

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import imageio_ffmpeg -> ImportError
    assert ffmpeg_missing() is not None
    out = tmp_path / "walk.mp4"
    args = ["video", "--checkpoint", str(finished_run), "--out", str(out), "--seconds", "0.5", "--fps", "10"]
    assert main(args) == 0
    assert "GIF instead of MP4: imageio_ffmpeg is not installed" in capsys.readouterr().err
    assert not out.exists()
    frames = imageio.mimread(str(tmp_path / "walk.gif"))
    # Pillow's GIF writer merges a frame identical (after palette quantisation) to the one before into
    # it, adding its duration: the timing of all 5 frames is kept even when fewer are stored.
    assert 1 < len(frames) <= 5 and frames[0].shape[:2] == (16, 16)
    assert len({f.tobytes() for f in frames}) > 1  # the latent walk moves
    with Image.open(tmp_path / "walk.gif") as gif:
        total_ms = sum(frame.info["duration"] for frame in ImageSequence.Iterator(gif))
    assert total_ms == 5 * 100  # 0.5 s at 10 fps


def test_video_errors(finished_run, tmp_path, capsys):
    base = ["video", "--checkpoint", str(finished_run)]
    assert main([*base, "--out", str(tmp_path / "v.avi")]) == 2
    assert ".mp4 or .gif" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "v.mp4"), "--fps", "0"]) == 2
    assert "--fps" in capsys.readouterr().err
    assert main(["video", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
