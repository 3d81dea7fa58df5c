"""``fastprogan video``: the official style of latent-walk video from a checkpoint (or release .pkl).

Latents: one N(0, I) draw per frame, smoothed over time by a Gaussian filter (sigma ``--smoothing-sec``
x ``--fps`` frames, periodic, so the video loops) and normalised by their RMS
(:func:`fastprogan.training.latents.smoothed_random_walk`). Frames stream from G_ema in batches with a
progress bar into an H.264 MP4 through imageio + imageio-ffmpeg (``pip install 'fastprogan[video]'``;
its wheel ships an ffmpeg binary). Without them the video falls back to an animated GIF via Pillow
(frames held in memory; the output name gets ``.gif``) and says why. Files are written atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fastprogan video`` to the top-level CLI."""
    p = subparsers.add_parser(
        "video",
        help="latent-walk video (MP4; GIF without ffmpeg) from a checkpoint or an official .pkl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint", required=True, help="checkpoint-*.pt, a run directory, or an official .pkl"
    )
    p.add_argument("--out", default="video.mp4", help="output file, .mp4 or .gif (default video.mp4)")
    p.add_argument("--seconds", type=float, default=10.0, help="duration (default 10)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    p.add_argument(
        "--smoothing-sec", type=float, default=1.0, help="Gaussian sigma over time in seconds (1.0)"
    )
    p.add_argument("--seed", type=int, default=0, help="random walk seed")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda:1 ...")
    p.add_argument("--precision", default="fp32", help="fp32 (default) | bf16 | fp16 | auto")
    p.add_argument("--batch", type=int, default=32, help="frames per forward pass")
    p.add_argument("--lod", type=float, help="level of detail (default: the checkpoint's)")
    p.set_defaults(func=run_video)


def ffmpeg_missing() -> str | None:
    """None when imageio can write MP4 through imageio-ffmpeg, else the reason it cannot."""
    try:
        import imageio.v2  # noqa: F401 - probing
        import imageio_ffmpeg
    except ImportError as exc:
        return f"{exc.name or 'imageio'} is not installed (pip install 'fastprogan[video]')"
    try:
        imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        return f"no ffmpeg binary ({exc})"
    return None


def write_mp4(frames: Iterable[np.ndarray], path: Path, fps: float) -> Path:
    """uint8 [H, W, 3] frames -> H.264 MP4 (yuv420p) at ``path``, atomically."""
    import imageio.v2 as imageio

    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        # macro_block_size 2: any even size is kept as is (yuv420p needs even sizes); 16 would rescale.
        writer = imageio.get_writer(
            str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
            macro_block_size=2, quality=8,
        )  # fmt: skip
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_gif(frames: Iterable[np.ndarray], path: Path, fps: float) -> Path:
    """uint8 [H, W] or [H, W, 3] frames -> looping animated GIF via Pillow, atomically."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def run_video(args: argparse.Namespace) -> int:
    """Handler of ``fastprogan video``: one line and exit 2 on bad input."""
    import torch
    from tqdm import tqdm

    from fastprogan.training.checkpoint import load_generator
    from fastprogan.training.errors import CheckpointError, ConfigError
    from fastprogan.training.generate_cli import resolve_device
    from fastprogan.training.images import render_latents
    from fastprogan.training.latents import smoothed_random_walk
    from fastprogan.training.precision import resolve_precision

    try:
        for name in ("seconds", "fps"):
            if not getattr(args, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(args, name)}")
        if args.smoothing_sec < 0 or args.batch < 1:
            raise ValueError("--smoothing-sec must be >= 0 and --batch >= 1")
        out = Path(args.out)
        if out.suffix.lower() not in (".mp4", ".gif"):
            raise ValueError(f"--out {out}: the video must be a .mp4 or .gif file")
        device = resolve_device(args.device)
        policy = resolve_precision(args.precision, device)
        G, meta = load_generator(args.checkpoint, device)
        lod = meta["lod"] if args.lod is None else args.lod
        G.level(lod)  # ValueError naming the valid range
    except (ValueError, CheckpointError, ConfigError) as exc:
        print(f"fastprogan video: error: {exc}", file=sys.stderr)
        return 2
    num_frames = max(1, round(args.seconds * args.fps))
    z = smoothed_random_walk(
        num_frames, G.latent_size, fps=args.fps, smoothing_sec=args.smoothing_sec, seed=args.seed
    )
    use_mp4 = out.suffix.lower() == ".mp4"
    missing = ffmpeg_missing() if use_mp4 else None
    if missing is not None:
        out = out.with_suffix(".gif")
        print(f"note: writing a GIF instead of MP4: {missing}", file=sys.stderr)
        use_mp4 = False
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=num_frames, unit="frame", file=sys.stderr, disable=None, desc="video")

    def frames():
        for batch in render_latents(G, z, lod, device, args.batch, policy.autocast()):  # uint8 [B, C, R, R]
            arr = batch.permute(0, 2, 3, 1).numpy()  # [B, R, R, C]
            for frame in arr:
                if use_mp4 and frame.shape[2] == 1:
                    frame = np.repeat(frame, 3, axis=2)  # H.264 here is colour (yuv420p)
                yield frame[:, :, 0] if frame.shape[2] == 1 else frame
            bar.update(arr.shape[0])

    try:
        with torch.no_grad():
            written = (write_mp4 if use_mp4 else write_gif)(frames(), out, args.fps)
    finally:
        bar.close()
    res = G.level(lod).resolution
    print(f"wrote {written} ({num_frames} frames at {args.fps:g} fps, {res}px)")
    return 0
