"""The harness: plans every measure's rows into the time budget, runs them in order, writes results.csv.

Order (a run cut short keeps the most important rows): the correctness smoke (always run in full),
then the training iteration, the per-op rows and the dispatch table. After the smoke, the time left is
split into windows (``BUDGET_SHARES``; what a measure leaves unused passes to the next). Inside a
window, tasks run in their priority order; a task whose estimate, scaled by how long the finished
tasks of the measure took against their estimates, no longer fits the window or the whole budget is
left out (listed in report.md). Every row is written, flushed and fsynced to results.csv as soon as
it is measured, so a kill keeps everything measured so far.
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from fastprogan.bench import env

CSV_COLUMNS = [
    "measure",
    "name",
    "provider",
    "resolution",
    "dtype",
    "mode",
    "batch",
    "shape",
    "status",
    "detail",
    "median_ms",
    "iqr_ms",
    "reps",
    "img_per_s",
    "sec_per_kimg",
    "gb_per_s",
    "tflop_per_s",
    "roofline_frac",
    "gpu_busy_frac",
    "peak_mem_mb",
    "bytes",
    "flops",
    "device",
    "torch",
    "triton",
    "cudnn",
    "timestamp",
]
MEASURES = ("smoke", "train", "ops", "dispatch")
# Shares of the budget left after the smoke; unused time passes on to the next measure.
BUDGET_SHARES = {"train": 0.45, "ops": 0.30, "dispatch": 0.25}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Options:
    """What one bench run measures (the CLI's arguments)."""

    out: Path
    device: torch.device
    quick: bool = False
    budget_s: float = 420.0
    measures: tuple[str, ...] = MEASURES
    dtypes: tuple[str, ...] | None = None  # None: the measure's default
    resolutions: tuple[int, ...] | None = None
    providers: tuple[str, ...] | None = None  # None: every registered provider
    compile_backend: str | None = None  # None: inductor on CUDA, "eager" on CPU (see cli.py)
    compile: bool = True


@dataclass
class Task:
    """One planned unit of measurement, producing one or more rows."""

    measure: str
    label: str
    est_s: float
    run: Callable[[], list[dict[str, Any]]]
    kind: str = ""  # tasks of one kind share the estimate correction (e.g. compile rows vs eager rows)


class Skipped(Exception):
    """Raised by a provider that cannot run here; the row is written with status "skipped" and the reason."""


def attempt(identity: dict[str, Any], fn: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``fn()``'s rows, each completed with ``identity``; a failure becomes one row saying why."""
    try:
        return [{**identity, **row} for row in fn()]
    except Skipped as exc:
        return [{**identity, "status": "skipped", "detail": str(exc)}]
    except Exception as exc:  # an error in one row (an OOM, a compile failure) must not end the session
        return [{**identity, "status": "error", "detail": _one_line(exc)}]


class ResultsWriter:
    """results.csv, one row at a time: written, flushed and fsynced per row (a kill keeps the rows)."""

    def __init__(self, path: Path, common: dict[str, str]) -> None:
        self.path = path
        self.common = common
        self.rows: list[dict[str, Any]] = []
        self._file = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS, extrasaction="raise")
        self._writer.writeheader()
        self._sync()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def write(self, row: dict[str, Any]) -> dict[str, Any]:
        full = {k: "" for k in CSV_COLUMNS}
        full.update(self.common)
        full["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for key, value in row.items():
            if key not in full:
                raise KeyError(f"results.csv has no column {key!r}")
            full[key] = _cell(value)
        self._writer.writerow(full)
        self._sync()
        self.rows.append(full)
        return full

    def close(self) -> None:
        self._file.close()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@dataclass
class Session:
    """Shared state of one run: options, the device's identity, the writer and the clock."""

    options: Options
    device_name: str
    peak_bandwidth: float | None  # bytes/s, None: unknown device (no roofline fraction)
    writer: ResultsWriter
    started: float = field(default_factory=time.perf_counter)
    left_out: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return self.options.device

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def log(self, message: str) -> None:
        print(f"[bench {self.elapsed():5.0f}s/{self.options.budget_s:.0f}s] {message}", flush=True)

    def wants_provider(self, name: str) -> bool:
        return self.options.providers is None or name in self.options.providers

    def dtypes(self, default: tuple[str, ...]) -> tuple[str, ...]:
        chosen = self.options.dtypes or default
        return tuple(d for d in default if d in chosen) or tuple(chosen)


def spread(values: list[int]) -> list[int]:
    """``values`` reordered so that any prefix covers the range: ends first, then midpoints."""
    if len(values) <= 2:
        return list(values)
    out = [values[0], values[-1]]
    pending = [(0, len(values) - 1)]
    while pending:
        lo, hi = pending.pop(0)
        if hi - lo < 2:
            continue
        mid = (lo + hi) // 2
        out.append(values[mid])
        pending += [(lo, mid), (mid, hi)]
    return out


def run_tasks(session: Session, measure: str, tasks: list[Task], window_s: float | None) -> float:
    """Run ``tasks`` in order within ``window_s`` seconds (None: all of them); return the seconds used."""
    start = time.perf_counter()
    ratios: dict[str, list[float]] = {}
    left_out: list[str] = []
    for i, task in enumerate(tasks):
        seen = ratios.get(task.kind)
        # Estimates are corrected by how the finished tasks of the kind did, never below 1/5 of the guess.
        scale = max(statistics.median(seen), 0.2) if seen else 1.0
        need = task.est_s * scale
        used = time.perf_counter() - start
        over_window = window_s is not None and used + need > window_s
        over_budget = window_s is not None and session.elapsed() + need > session.options.budget_s
        if over_window or over_budget:
            left_out.append(f"{task.label} (needs ~{need:.0f}s)")
            continue
        t0 = time.perf_counter()
        try:
            rows = task.run()
        except Exception as exc:  # one broken row must not cost the rest of the session
            rows = [{"measure": measure, "name": task.label, "status": "error", "detail": _one_line(exc)}]
        took = time.perf_counter() - t0
        ratios.setdefault(task.kind, []).append(max(took, 1e-3) / max(task.est_s, 1e-3))
        for row in rows:
            full = session.writer.write({"measure": measure, **row})
            session.log(f"{measure} {i + 1}/{len(tasks)} {_describe(full)}")
        if session.cuda:
            torch.cuda.empty_cache()
    if left_out:
        session.left_out[measure] = left_out
        session.log(f"{measure}: {len(left_out)} of {len(tasks)} tasks left out to fit the budget")
    return time.perf_counter() - start


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:300]


def _describe(row: dict[str, str]) -> str:
    parts = [row["name"], row["provider"], row["dtype"], row["mode"]]
    if row["resolution"]:
        parts.append(f"{row['resolution']}px")
    text = " ".join(p for p in parts if p) + f": {row['status']}"
    if row["img_per_s"]:
        text += f", {float(row['img_per_s']):.1f} img/s"
    if row["median_ms"]:
        text += f", {float(row['median_ms']):.3f} ms (IQR {float(row['iqr_ms'] or 0):.3f})"
    if row["gb_per_s"]:
        text += f", {float(row['gb_per_s']):.1f} GB/s"
    if row["status"] in ("failed", "error", "skipped") and row["detail"]:
        text += f" [{row['detail'][:160]}]"
    return text


def measure_modules() -> dict[str, Any]:
    """The measure modules by name (imported here: each imports torch-heavy code)."""
    from fastprogan.bench import dispatch, ops, smoke, train

    return {"smoke": smoke, "train": train, "ops": ops, "dispatch": dispatch}


def run(options: Options) -> int:
    """Run the bench into ``options.out``; 0 when the smoke passed (or was not asked for), 1 if it failed."""
    options.out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if options.device.type == "cpu" and options.quick:
        # Tiny layers: one intra-op thread. Two threads on a busy 2-core box ran the quick training
        # iteration at 2.6 s instead of 80 ms (thread oversubscription), as the quickstart preset notes.
        torch.set_num_threads(1)
    try:
        return _run(options)
    finally:
        torch.set_num_threads(threads)


def _run(options: Options) -> int:
    import json

    from fastprogan.bench import report

    if options.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as training would run; the first calls autotune (warm-up)
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are fp32 (precision policy)
        torch.backends.cudnn.allow_tf32 = False
    name = env.device_name(options.device)
    environment = env.environment(options.device)
    (options.out / "env.json").write_text(json.dumps(environment, indent=2, default=str) + "\n")
    versions = environment["versions"]
    common = {
        "device": name,
        "torch": versions["torch"],
        "triton": versions["triton"],
        "cudnn": versions["cudnn"],
    }
    writer = ResultsWriter(options.out / "results.csv", common)
    bandwidth = env.peak_bandwidth(name) if options.device.type == "cuda" else None
    session = Session(options, name, bandwidth, writer)
    session.log(
        f"{name}: torch {versions['torch']}, triton {versions['triton'] or '-'}, cudnn {versions['cudnn'] or '-'}; "
        f"measures {', '.join(options.measures)}{' (quick shapes)' if options.quick else ''} -> {options.out}"
    )
    modules = measure_modules()
    try:
        for measure in MEASURES:
            if measure not in options.measures:
                continue
            module = modules[measure]
            try:
                tasks = module.tasks(session)
            except Exception as exc:  # a measure that cannot even plan must not cost the others
                session.writer.write(
                    {"measure": measure, "name": measure, "status": "error", "detail": _one_line(exc)}
                )
                session.log(f"{measure}: could not plan: {_one_line(exc)}")
                continue
            if measure == "smoke":
                window = None
            else:
                later = [m for m in MEASURES[MEASURES.index(measure) :] if m in options.measures]
                left = max(options.budget_s - session.elapsed(), 0.0)
                share = BUDGET_SHARES[measure] / sum(BUDGET_SHARES[m] for m in later)
                window = left * share  # the last measure gets all that is left
            est = sum(t.est_s for t in tasks)
            session.log(
                f"{measure}: {len(tasks)} tasks, ~{est:.0f}s estimated"
                + ("" if window is None else f", window {window:.0f}s")
            )
            run_tasks(session, measure, tasks, window)
            finish = getattr(module, "finish", None)
            if finish is not None:
                try:
                    finish(session)
                except Exception as exc:
                    session.writer.write(
                        {
                            "measure": measure,
                            "name": f"{measure} finish",
                            "status": "error",
                            "detail": _one_line(exc),
                        }
                    )
    finally:
        writer.close()
        paths = report.write_report(options.out, session=session)
        session.log(f"wrote {', '.join(p.name for p in paths)}")
    failed = [r for r in writer.rows if r["measure"] == "smoke" and r["status"] in ("failed", "error")]
    if failed:
        print(
            f"bench: the correctness smoke failed in {len(failed)} rows (report.md lists them first)",
            file=sys.stderr,
        )
        return 1
    return 0
