"""report.md and the PNG plots, from results.csv (and env.json) in a bench output folder.

Also runs on its own (``fastprogan bench --report-only --out D``), e.g. on the CSV of a run that was
killed. Failed and errored rows come first. matplotlib is optional: without it the report says so and
only the plots are missing.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

PLOT_OPS = "ops_speedup.png"
PLOT_TRAIN = "train_img_per_s.png"


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of results.csv; a last line cut by a kill (fewer fields than the header) is dropped."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader if None not in row.values() and None not in row]
    return rows


def _f(value: str) -> float | None:
    return float(value) if value not in ("", None) else None


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _res(row: dict[str, str]) -> int:
    return int(row["resolution"]) if row["resolution"] else 0


def _speedups(rows: list[dict[str, str]], measure: str, base: str) -> dict[tuple, float]:
    """median(base) / median(provider) per (name, resolution, dtype, mode, provider)."""
    times = {
        (r["name"], r["resolution"], r["dtype"], r["mode"], r["provider"]): float(r["median_ms"])
        for r in rows
        if r["measure"] == measure and r["status"] == "ok" and r["median_ms"]
    }
    out = {}
    for (name, res, dtype, mode, provider), ms in times.items():
        ref = times.get((name, res, dtype, mode, base))
        if ref is not None and provider != base and ms > 0:
            out[(name, res, dtype, mode, provider)] = ref / ms
    return out


def _failures(rows: list[dict[str, str]]) -> list[str]:
    bad = [r for r in rows if r["status"] in ("failed", "error")]
    bad.sort(key=lambda r: (r["measure"] != "smoke", r["status"] != "failed"))
    if not bad:
        return []
    lines = [f"## Failures ({len(bad)} rows)", ""]
    body = [
        [
            r["measure"],
            r["name"],
            r["provider"],
            r["dtype"],
            r["mode"],
            r["resolution"],
            r["status"],
            r["detail"],
        ]
        for r in bad
    ]
    return lines + _table(["measure", "name", "provider", "dtype", "mode", "R", "status", "detail"], body)


def _smoke(rows: list[dict[str, str]]) -> list[str]:
    smoke = [r for r in rows if r["measure"] == "smoke"]
    if not smoke:
        return ["## Correctness smoke", "", "Not run.", ""]
    ok = sum(r["status"] == "ok" for r in smoke)
    lines = ["## Correctness smoke", "", f"{ok} of {len(smoke)} rows passed (Triton kernel vs `_ref`).", ""]
    body = [
        [r["name"], r["dtype"], r["resolution"], r["shape"], r["mode"], r["status"], r["detail"]]
        for r in smoke
    ]
    return lines + _table(["op", "dtype", "R", "shape", "mode", "status", "detail"], body)


def _train(rows: list[dict[str, str]]) -> list[str]:
    train = [r for r in rows if r["measure"] == "train"]
    if not train:
        return []
    speed = _speedups(rows, "train", "eager-ref")
    lines = ["## Training iteration (D step with penalty + G step + EMA)", ""]
    notes = sorted(
        {f"`{r['provider']}`: {r['detail']}" for r in train if r["status"] == "ok" and r["detail"]}
    )
    lines += [f"- {n}" for n in notes] + [""]
    body = []
    for r in sorted(train, key=lambda r: (r["dtype"], _res(r), r["provider"])):
        key = (r["name"], r["resolution"], r["dtype"], r["mode"], r["provider"])
        busy = _f(r["gpu_busy_frac"])
        body.append(
            [
                r["resolution"],
                r["batch"],
                r["dtype"],
                r["provider"],
                r["status"] if r["status"] != "ok" else _fmt(_f(r["img_per_s"])),
                _fmt(_f(r["sec_per_kimg"])),
                f"{_fmt(_f(r['median_ms']))} ({_fmt(_f(r['iqr_ms']), 2)})"
                if r["median_ms"]
                else r["detail"][:80],
                _fmt(_f(r["peak_mem_mb"])),
                "" if busy is None else f"{busy:.0%}",
                _fmt(speed.get(key)),
            ]
        )
    header = [
        "R",
        "batch",
        "dtype",
        "provider",
        "img/s",
        "s/kimg",
        "ms (IQR)",
        "peak MiB",
        "GPU busy",
        "x eager-ref",
    ]
    return lines + _table(header, body)


def _ops(rows: list[dict[str, str]]) -> list[str]:
    op_rows = [r for r in rows if r["measure"] == "ops"]
    if not op_rows:
        return []
    vs_ref = _speedups(rows, "ops", "eager-ref")
    vs_compile = _speedups(rows, "ops", "compile-ref")
    lines = [
        "## Per op",
        "",
        "GB/s: the bytes of fastprogan's GPU path (traffic counter) over each provider's time, so providers "
        "compare like for like; roofline: that over the device's peak bandwidth (blank: unknown device).",
        "",
    ]
    body = []
    for r in sorted(op_rows, key=lambda r: (r["name"], r["dtype"], r["mode"], _res(r), r["provider"])):
        key = (r["name"], r["resolution"], r["dtype"], r["mode"], r["provider"])
        frac = _f(r["roofline_frac"])
        body.append(
            [
                r["name"],
                r["resolution"],
                r["dtype"],
                r["mode"],
                r["provider"],
                f"{_fmt(_f(r['median_ms']))} ({_fmt(_f(r['iqr_ms']), 2)})" if r["median_ms"] else r["status"],
                _fmt(_f(r["gb_per_s"])),
                "" if frac is None else f"{frac:.0%}",
                _fmt(_f(r["tflop_per_s"])),
                _fmt(vs_ref.get(key)),
                _fmt(vs_compile.get(key)) if r["provider"] != "compile-ref" else "",
            ]
        )
    header = [
        "op",
        "R",
        "dtype",
        "mode",
        "provider",
        "ms (IQR)",
        "GB/s",
        "roofline",
        "TFLOP/s",
        "x eager",
        "x compile",
    ]
    return lines + _table(header, body)


def _dispatch(rows: list[dict[str, str]], out: Path) -> list[str]:
    d_rows = [r for r in rows if r["measure"] == "dispatch" and r["status"] == "ok"]
    if not d_rows:
        return []
    by_key: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for r in d_rows:
        key = r["detail"].split(";")[0].removeprefix("key ").strip()
        by_key[(r["name"], key)][r["provider"]] = r["median_ms"]
    lines = ["## Dispatch table", ""]
    if (out / "dispatch_table.json").is_file():
        lines += [
            "Winners written to `dispatch_table.json` (commit it under `fastprogan/ops/dispatch_tables/`).",
            "",
        ]
    body = []
    for (op, key), times in sorted(by_key.items()):
        winner = min(times, key=lambda k: float(times[k]))
        body.append([op, key, _fmt(_f(times.get("fused", ""))), _fmt(_f(times.get("ref", ""))), winner])
    return lines + _table(["op", "shape key", "fused ms", "ref ms", "winner"], body)


def _resolution_axis(ax: Any, resolutions: list[int]) -> None:
    """A log2 x axis labelled with the resolutions themselves (4, 8, ... 1024)."""
    ax.set_xscale("log", base=2)
    ticks = sorted(set(resolutions))
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()


def plot(rows: list[dict[str, str]], out: Path) -> tuple[list[Path], str | None]:
    """The PNGs (op speed-up and training img/s against resolution); (paths, message if none drawn)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed: no plots (pip install matplotlib); the tables are complete"
    paths = []
    speed = _speedups(rows, "ops", "eager-ref")
    names = sorted({k[0] for k in speed})
    if names:
        cols = min(3, len(names))
        nrows = -(-len(names) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
        for ax, name in zip(axes.flat, names, strict=False):
            series: dict[tuple[str, str, str], list[tuple[int, float]]] = defaultdict(list)
            for (n, res, dtype, mode, provider), s in speed.items():
                if n == name:
                    series[(provider, dtype, mode)].append((int(res), s))
            for (provider, dtype, mode), pts in sorted(series.items()):
                pts.sort()
                style = "-" if provider == "fastprogan" else "--"
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    style,
                    marker="o",
                    label=f"{provider} {dtype} {mode}",
                )
            ax.axhline(1.0, color="grey", lw=0.8)
            _resolution_axis(ax, [p[0] for pts in series.values() for p in pts])
            ax.set_title(name)
            ax.set_xlabel("resolution")
            ax.set_ylabel("speed-up vs eager-ref")
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(names) :]:
            ax.set_visible(False)
        fig.tight_layout()
        paths.append(out / PLOT_OPS)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    train = [r for r in rows if r["measure"] == "train" and r["status"] == "ok" and r["img_per_s"]]
    if train:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        series = defaultdict(list)
        for r in train:
            series[(r["provider"], r["dtype"])].append((_res(r), float(r["img_per_s"])))
        for (provider, dtype), pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{provider} {dtype}")
        _resolution_axis(ax, [p[0] for pts in series.values() for p in pts])
        ax.set_yscale("log")
        ax.set_xlabel("resolution")
        ax.set_ylabel("training img/s")
        ax.set_title(f"training iteration, {train[0]['device']}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / PLOT_TRAIN)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths, None if paths else "no rows to plot"


def write_report(out: Path, session: Any = None) -> list[Path]:
    """Write report.md (and the PNGs) into ``out`` from its results.csv; return the paths written."""
    rows = read_rows(out / "results.csv")
    envinfo: dict[str, Any] = {}
    if (out / "env.json").is_file():
        envinfo = json.loads((out / "env.json").read_text(encoding="utf-8"))
    versions = envinfo.get("versions", {})
    try:
        pngs, plot_note = plot(rows, out)
    except Exception as exc:  # a broken matplotlib install must not cost the tables
        pngs, plot_note = [], f"plotting failed ({type(exc).__name__}: {exc}); the tables are complete"
    lines = [
        f"# fastprogan bench: {envinfo.get('device', rows[0]['device'] if rows else '?')}",
        "",
        f"torch {versions.get('torch', '?')}, Triton {versions.get('triton') or '-'}, "
        f"cuDNN {versions.get('cudnn') or '-'}, CUDA {versions.get('cuda') or '-'}; "
        f"{envinfo.get('timestamp', '')}; {len(rows)} rows in `results.csv`, device details in `env.json`.",
        "",
    ]
    if envinfo.get("device_type") == "cpu":
        lines += [
            "CPU dry run: tiny shapes prove the code path; the times are not GPU claims. Triton kernels ran "
            "under the interpreter in the smoke only (never timed).",
            "",
        ]
    if session is not None:
        lines.append(f"Budget {session.options.budget_s:.0f} s, used {session.elapsed():.0f} s.")
        lines.append("")
    lines += _failures(rows) + _smoke(rows) + _train(rows) + _ops(rows) + _dispatch(rows, out)
    skipped = [r for r in rows if r["status"] == "skipped"]
    if skipped:
        lines += [f"## Skipped rows ({len(skipped)})", ""]
        reasons = defaultdict(list)
        for r in skipped:
            reasons[r["detail"]].append(f"{r['name']} {r['provider']} {r['dtype']} {r['resolution']}px")
        lines += [
            f"- {reason}: {len(items)} rows ({', '.join(items[:4])}{', ...' if len(items) > 4 else ''})"
            for reason, items in reasons.items()
        ] + [""]
    left_out = getattr(session, "left_out", {}) if session is not None else {}
    if left_out:
        lines += ["## Left out to fit the budget", ""]
        for measure, labels in left_out.items():
            lines.append(
                f"- {measure}: {len(labels)} tasks ({'; '.join(labels[:6])}{'; ...' if len(labels) > 6 else ''})"
            )
        lines.append("")
    lines += ["## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in pngs] if pngs else [plot_note or ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if plot_note and not pngs:
        print(f"bench: {plot_note}")
    return [path, *pngs]
