"""benchmarks/report.py: latest row per key, speed-up ratios, one report per device, bad CSVs."""

import csv
import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "bench_report", Path(__file__).resolve().parents[2] / "benchmarks" / "report.py"
)
report = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(report)

FIELDS = ["timestamp", "device", "op", "provider", "resolution", "dtype", "mode", "median_ms", "gb_per_s"]


def _write(path, rows):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)


def _row(ts, device, provider, ms, res=64, gbs=""):
    return dict(
        timestamp=ts,
        device=device,
        op="g_block",
        provider=provider,
        resolution=res,
        dtype="bf16",
        mode="fwd",
        median_ms=ms,
        gb_per_s=gbs,
    )


def test_report_ratios_latest_rows_and_devices(tmp_path):
    csv_path = tmp_path / "ops.csv"
    _write(
        csv_path,
        [
            _row("2026-01-01T00:00:00", "H100", "ref", 9.0),  # superseded by the later ref row
            _row("2026-01-02T00:00:00", "H100", "ref", 4.0),
            _row("2026-01-02T00:00:00", "H100", "compile", 3.0),
            _row("2026-01-02T00:00:00", "H100", "fastprogan", 2.0, gbs="1500"),
            _row("2026-01-02T00:00:00", "A100 80GB", "ref", 5.0),
        ],
    )
    written = report.write_report(csv_path, tmp_path / "out" / "report", plots=False)
    assert [p.name for p in written] == ["report-a100-80gb.md", "report-h100.md"]
    h100 = (tmp_path / "out" / "report-h100.md").read_text()
    assert "| g_block | bf16 | fwd | 64 | 4.000 | 3.000 | 2.000 | 2.00 | 1.50 | 1500 |  |" in h100
    assert "9.000" not in h100


def test_report_plots(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (the bench extra) draws the report's PNGs")
    csv_path = tmp_path / "ops.csv"
    _write(
        csv_path,
        [_row("t", "cpu", p, ms, res) for p, ms in (("ref", 4.0), ("fastprogan", 2.0)) for res in (8, 16)],
    )
    written = report.write_report(csv_path, tmp_path / "report")
    png = [p for p in written if p.suffix == ".png"]
    assert len(png) == 1 and png[0].stat().st_size > 1000


def test_report_rejects_missing_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("device,op\nx,y\n")
    with pytest.raises(ValueError, match="missing columns"):
        report.write_report(bad, tmp_path / "r", plots=False)
