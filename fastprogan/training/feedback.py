"""Live feedback on rank 0: console + ``log.txt`` lines, ``stats.jsonl``, TensorBoard, a tqdm bar.

Every line printed during a run also goes to ``run_dir/log.txt``; every tick appends one JSON object
to ``run_dir/stats.jsonl``. TensorBoard events (``run_dir/tensorboard``) are written when the
``tensorboard`` package is installed (``pip install fastprogan[tensorboard]``); otherwise the log says
once that they are off and why. Other ranks stay silent, except for what they find wrong with the
data (``RankLog``): a corrupt image a rank skipped or stopped at goes at once to that rank's own
``run_dir/log-rank<R>.txt``, and the skips are gathered into rank 0's ``log.txt`` at the next tick.

The bar counts kimg rounded to 3 decimals (``1.92/2.2``, not ``1.9200000000000008/2.2``) and is set,
not incremented, so it never drifts and never passes 100% (the last round may overshoot
``total_kimg``). A write that fails (full disk, unwritable directory) raises OutputError naming the
file and the fix.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from fastprogan.training.atomic import write_atomically
from fastprogan.training.errors import output_error


def format_duration(seconds: float) -> str:
    """``"1d 02h 03m"``, ``"2h 03m 04s"``, ``"3m 04s"`` or ``"4s"`` like the official log."""
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h:02d}h {m:02d}m"
    if h:
        return f"{h}h {m:02d}m {s:02d}s"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


def format_tick_line(stats: dict[str, Any]) -> str:
    """The per-tick line (official fields, then throughput, memory and losses)."""
    line = (
        f"tick {stats['tick']:<5d} kimg {stats['kimg']:<8.1f} lod {stats['lod']:<5.2f} "
        f"res {stats['resolution']:<5d} minibatch {stats['minibatch']:<4d} "
        f"time {format_duration(stats['time_s']):<12s} sec/tick {stats['sec_per_tick']:<7.1f} "
        f"sec/kimg {stats['sec_per_kimg']:<7.2f} img/s {stats['images_per_s']:<8.1f} "
        f"maintenance {stats['maintenance_s']:<6.1f} peakmem {stats['peak_mem_gib']:.2f}GiB"
    )
    for key in ("d_loss", "g_loss", "gp", "real_score", "fake_score"):
        if key in stats and stats[key] is not None:
            line += f" {key} {stats[key]:.4f}"
    return line


class Feedback:
    """Rank 0's sinks; on other ranks every method is a no-op."""

    def __init__(
        self, run_dir: Path, *, enabled: bool, progress: bool, total_kimg: float, initial_kimg: float = 0.0
    ) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self._bar = None
        self._tb = None
        self._log = self._stats = None
        if not enabled:
            return
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._log = open(run_dir / "log.txt", "a", encoding="utf-8")
            self._stats = open(run_dir / "stats.jsonl", "a", encoding="utf-8")
        except OSError as exc:
            self.close()
            raise output_error(exc.filename or run_dir, exc) from None
        self._total = round(total_kimg, 3)
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self._total,
                initial=min(round(initial_kimg, 3), self._total),
                unit="kimg",
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def open_tensorboard(self) -> None:
        """Start TensorBoard events when the package is importable; say once why not otherwise."""
        if not self.enabled:
            return
        try:
            import tensorboard  # noqa: F401 - only probing that it is installed
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            self.log(
                f"TensorBoard events are off: {exc.name or 'tensorboard'} is not installed "
                "(pip install 'fastprogan[tensorboard]' to turn them on)"
            )
            return
        self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        self.log(f"TensorBoard events: {self.run_dir / 'tensorboard'}")

    def log(self, message: str) -> None:
        """Print a line (above the progress bar) and append it to log.txt."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)
        self._write(self._log, self.run_dir / "log.txt", message + "\n")

    def _write(self, f: Any, path: Path, text: str) -> None:
        try:
            f.write(text)
            f.flush()
        except OSError as exc:
            raise output_error(path, exc) from None

    def advance(self, kimg_now: float) -> None:
        """Move the progress bar to ``kimg_now`` (rounded to 3 decimals, at most ``total_kimg``)."""
        if self._bar is not None:
            self._bar.n = min(round(kimg_now, 3), self._total)
            self._bar.refresh()

    def tick(self, stats: dict[str, Any]) -> None:
        """One tick: the log line, a stats.jsonl object and TensorBoard scalars."""
        if not self.enabled:
            return
        self.log(format_tick_line(stats))
        self._write(self._stats, self.run_dir / "stats.jsonl", json.dumps(stats, sort_keys=True) + "\n")
        if self._tb is not None:
            step = round(stats["kimg"] * 1000)
            for key, value in stats.items():
                if isinstance(value, (int, float)) and math.isfinite(value) and key != "tick":
                    self._tb.add_scalar(
                        f"progress/{key}" if key in _PROGRESS else f"train/{key}", value, step
                    )
            self._tb.flush()

    def metrics(self, kimg: float, result: dict[str, Any]) -> None:
        """Metric results: a log line, a stats.jsonl object and TensorBoard scalars."""
        if not self.enabled:
            return
        scalars = _flat_scalars(result)
        self.log(
            f"metrics at kimg {kimg:.1f}: " + " ".join(f"{k} {v:.4f}" for k, v in sorted(scalars.items()))
        )
        line = json.dumps({"kimg": kimg, "metrics": result}, sort_keys=True, default=str) + "\n"
        self._write(self._stats, self.run_dir / "stats.jsonl", line)
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(f"metrics/{k}", v, round(kimg * 1000))

    def image(self, tag: str, grid: Any, nimg: int) -> None:
        """A uint8 image grid [C, H, W] (C = 1 or 3) as TensorBoard image ``images/<tag>`` at step nimg."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(f"images/{tag}", grid, nimg, dataformats="CHW")
            self._tb.flush()

    def close(self) -> None:
        """Close every sink; never raises (it runs while another error may be propagating)."""
        if not self.enabled:
            return
        for sink in (self._bar, self._tb, self._log, self._stats):
            if sink is not None:
                try:
                    sink.close()
                except (OSError, ValueError):
                    pass
        self._bar = self._tb = self._log = self._stats = None


class RankLog:
    """The data-integrity lines of a rank other than 0 (e.g. "skipped corrupt image 7 of ...").

    Each line is appended at once to ``run_dir/log-rank<R>.txt`` (one file per rank: no two processes
    write one file, which shared filesystems do not make safe), so it survives even a run that stops
    on this rank; ``take()`` hands the lines written since the last call to the trainer, which gathers
    them into rank 0's ``log.txt`` at the tick.
    """

    def __init__(self, run_dir: Path, rank: int) -> None:
        self.path = run_dir / f"log-rank{rank}.txt"
        self._pending: list[str] = []

    def log(self, message: str) -> None:
        """Append ``message`` to this rank's log file and keep it for rank 0.

        Never raises: a rank whose node cannot write the run directory (e.g. it is not on a shared
        filesystem) prints the line to its stderr instead and keeps training; rank 0 still gets it."""
        self._pending.append(message)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(message + "\n")
        except OSError as exc:
            print(
                f"{message} (not written to {self.path}: {exc.strerror or exc})", file=sys.stderr, flush=True
            )

    def take(self) -> list[str]:
        """The lines logged since the last call (and forget them)."""
        lines, self._pending = self._pending, []
        return lines


_PROGRESS = {
    "kimg",
    "lod",
    "resolution",
    "minibatch",
    "time_s",
    "sec_per_tick",
    "sec_per_kimg",
    "images_per_s",
}


def _flat_scalars(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numbers of a (nested) metrics result as ``{"swd.mean": 4.6, "msssim": 0.33, ...}``."""
    out: dict[str, float] = {}
    for k, v in result.items():
        if isinstance(v, dict):
            out.update(_flat_scalars(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("seed", "num_images"):
            out[f"{prefix}{k}"] = float(v)
    return out


def peak_memory_gib(device_type: str) -> float:
    """Peak memory of this process: CUDA allocator peak on GPUs, max RSS on CPU."""
    if device_type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return rss / (2**30 if sys.platform == "darwin" else 2**20)
    except ImportError:  # Windows
        return float("nan")


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON, atomically (temp file + rename; OutputError on a failed write)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
