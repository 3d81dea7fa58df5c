"""Benchmark report: speed (and memory) against resolution, as PNG plots and a markdown table.

    python benchmarks/report.py [benchmarks/results/ops.csv] [--out benchmarks/results/report]

Reads the long CSV that ``benchmarks/bench_ops.py`` appends to (one row per measurement, keyed by
device), keeps the latest row per (device, op, provider, resolution, dtype, mode, batch), and writes for each
device ``<out>-<device>.md`` (a table with fastprogan's speed-up over ``ref`` and ``compile`` and the
achieved GB/s) and ``<out>-<device>-<mode>.png`` (median time, and peak memory when measured, against
resolution: one panel per op, one line per provider and dtype). Ratios are only meaningful within one
device and one session: the CSV keeps the timestamp of each row.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

KEY = ("device", "op", "provider", "resolution", "dtype", "mode")
PROVIDERS = ("ref", "compile", "fastprogan")


def load_latest(path: Path) -> list[dict]:
    """Rows of the CSV, the latest per KEY (by timestamp), with numeric fields parsed."""
    latest: dict[tuple, dict] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            missing = [k for k in (*KEY, "median_ms", "timestamp") if k not in row]
            if missing:
                raise ValueError(f"{path}: missing columns {missing}")
            row["resolution"] = int(row["resolution"])
            row["median_ms"] = float(row["median_ms"])
            for k in ("gb_per_s", "peak_mem_mb"):
                row[k] = float(row[k]) if row.get(k) not in (None, "") else None
            key = (*(row[k] for k in KEY), row.get("batch", ""))  # CPU rows time two batches per R
            if key not in latest or row["timestamp"] >= latest[key]["timestamp"]:
                latest[key] = row
    return list(latest.values())


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def markdown_table(rows: list[dict]) -> str:
    """One line per (op, dtype, mode, resolution): median ms per provider, speed-ups, GB/s, peak MB."""
    cells: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        cells[(r["op"], r["dtype"], r["mode"], r["resolution"], r.get("batch", ""))][r["provider"]] = r
    lines = [
        "| op | dtype | mode | R | ref ms | compile ms | fastprogan ms | x vs ref | x vs compile | GB/s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(p: dict, name: str) -> str:
        return f"{p[name]['median_ms']:.3f}" if name in p else ""

    def speedup(p: dict, base: str) -> str:
        if base in p and "fastprogan" in p and p["fastprogan"]["median_ms"] > 0:
            return f"{p[base]['median_ms'] / p['fastprogan']['median_ms']:.2f}"
        return ""

    for (op, dtype, mode, res, n), p in sorted(
        cells.items(), key=lambda kv: (*kv[0][:4], int(kv[0][4] or 0))
    ):
        fast = p.get("fastprogan", {})
        gbs = f"{fast['gb_per_s']:.0f}" if fast.get("gb_per_s") else ""
        mem = f"{fast['peak_mem_mb']:.0f}" if fast.get("peak_mem_mb") else ""
        lines.append(
            f"| {op} | {dtype} | {mode} | {res}{f' (N={n})' if n else ''} | {ms(p, 'ref')} | {ms(p, 'compile')} | {ms(p, 'fastprogan')} "
            f"| {speedup(p, 'ref')} | {speedup(p, 'compile')} | {gbs} | {mem} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], device: str, mode: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = sorted({r["op"] for r in rows})
    has_mem = any(r["peak_mem_mb"] for r in rows)
    nrows = 2 if has_mem else 1
    fig, axes = plt.subplots(nrows, len(ops), figsize=(4 * len(ops), 3.4 * nrows), squeeze=False)
    for j, op in enumerate(ops):
        series: dict[tuple, list] = defaultdict(list)
        for r in rows:
            if r["op"] == op:
                series[(r["provider"], r["dtype"])].append(r)
        for (provider, dtype), pts in sorted(series.items()):
            pts.sort(key=lambda r: r["resolution"])
            xs = [r["resolution"] for r in pts]
            style = "-" if provider == "fastprogan" else "--" if provider == "compile" else ":"
            label = f"{provider} {dtype}"
            axes[0][j].plot(xs, [r["median_ms"] for r in pts], style, marker="o", label=label)
            if has_mem:
                axes[1][j].plot(
                    xs, [r["peak_mem_mb"] or float("nan") for r in pts], style, marker="o", label=label
                )
        for i in range(nrows):
            ax = axes[i][j]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("resolution")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][j].set_title(op)
        axes[0][j].set_ylabel("median ms")
        if has_mem:
            axes[1][j].set_ylabel("peak MB")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{device}: {mode}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(csv_path: Path, out: Path, plots: bool = True) -> list[Path]:
    """Write the markdown (and PNG) report files for every device in the CSV; return their paths."""
    rows = load_latest(csv_path)
    if not rows:
        raise ValueError(f"{csv_path}: no benchmark rows")
    written = []
    out.parent.mkdir(parents=True, exist_ok=True)
    for device in sorted({r["device"] for r in rows}):
        dev_rows = [r for r in rows if r["device"] == device]
        md = out.parent / f"{out.name}-{slug(device)}.md"
        md.write_text(
            f"# Benchmarks on {device}\n\nSource: `{csv_path}` (latest row per key).\n\n"
            + markdown_table(dev_rows)
        )
        written.append(md)
        if plots:
            for mode in sorted({r["mode"] for r in dev_rows}):
                png = out.parent / f"{out.name}-{slug(device)}-{slug(mode)}.png"
                plot([r for r in dev_rows if r["mode"] == mode], device, mode, png)
                written.append(png)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).parent / "results"
    parser.add_argument("csv", nargs="?", type=Path, default=here / "ops.csv")
    parser.add_argument("--out", type=Path, default=here / "report", help="path prefix of the outputs")
    parser.add_argument("--no-plots", action="store_true", help="markdown only (no matplotlib needed)")
    args = parser.parse_args(argv)
    if not args.csv.exists():
        parser.error(f"{args.csv} does not exist: run benchmarks/bench_ops.py first")
    for path in write_report(args.csv, args.out, plots=not args.no_plots):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
