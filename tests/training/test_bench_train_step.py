"""benchmarks/bench_train_step.py runs as a script and writes one CSV row per resolution."""

import csv
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train_step.py"


def test_bench_writes_csv(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "steps.csv"
    args = ["--preset", "quickstart", "--fmap-base", "32", "--fmap-max", "8", "--resolutions", "4,8"]
    assert bench.main([*args, "--steps", "2", "--warmup", "1", "--batch", "8", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["resolution"]) for r in rows] == [4, 8]
    assert all(float(r["sec_per_step"]) > 0 and r["precision"] == "fp32" and r["batch"] == "8" for r in rows)
