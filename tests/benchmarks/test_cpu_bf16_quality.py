"""benchmarks/cpu_bf16_quality.py: seed-to-seed statistics, the spread verdict, and one tiny real run
(4x4 -> 16x16 in 0.3 kimg: SWD needs 16x16 images)."""

import csv
import importlib.util
import re
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "cpu_bf16_quality", Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_bf16_quality.py"
)
quality = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(quality)


def _run(precision, seed, swd):
    return quality.RunResult(precision, seed, swd, 9.0, 1.0, 30.0, "x.pt")


def test_summary_and_spread_verdict():
    results = [_run("fp32", 0, 20.0), _run("fp32", 1, 26.0), _run("fp32", 2, 23.0)]
    results += [_run("bf16", 0, 21.0), _run("bf16", 1, 25.5)]
    s = quality.summarize(results)
    assert list(s) == ["fp32", "bf16"]
    assert (s["fp32"].n, s["fp32"].low, s["fp32"].high) == (3, 20.0, 26.0)
    assert s["fp32"].mean == pytest.approx(23.0) and s["fp32"].stdev == pytest.approx(3.0)
    assert quality.within_range([21.0, 25.5], s["fp32"])
    assert not quality.within_range([21.0, 26.5], s["fp32"])  # one run outside the fp32 range
    diffs = quality.paired_differences(results, "bf16", "fp32")
    assert diffs == pytest.approx({0: 1.0, 1: -0.5})
    assert quality.within_spread(diffs, s["fp32"])  # |1.0|, |-0.5| <= stdev 3
    assert not quality.within_spread({0: 1.0, 1: -3.5}, s["fp32"])
    # each run follows its seed: outside [min, max] at the extremes, yet a tiny same-seed difference
    edge = [_run("fp32", 0, 20.0), _run("fp32", 1, 26.0), _run("bf16", 0, 19.9), _run("bf16", 1, 26.1)]
    s_edge = quality.summarize(edge)
    assert not quality.within_range([19.9, 26.1], s_edge["fp32"])
    assert quality.within_spread(quality.paired_differences(edge, "bf16", "fp32"), s_edge["fp32"])
    assert not quality.within_spread({}, s["fp32"])  # no common seed: no verdict
    assert quality.summarize([_run("bf16", 0, 5.0)])["bf16"].stdev == 0.0


def test_empty_seed_list_is_an_error():
    with pytest.raises(SystemExit, match="--seeds and --precisions"):
        quality.main(["--seeds", ""])


def test_one_short_run_trains_evaluates_and_writes_its_row(tmp_path, capsys):
    out = tmp_path / "q.csv"
    argv = [
        *("--seeds", "3", "--precisions", "fp32", "--out", str(tmp_path / "runs"), "--csv", str(out)),
        *("--num-images", "32", "--train-arg=--total-kimg=0.3"),
        *("--train-arg=--lod-training-kimg=0.05", "--train-arg=--lod-transition-kimg=0.05"),
    ]
    rc = quality.main(argv)
    assert rc == 0
    (row,) = list(csv.DictReader(out.open()))
    assert (row["precision"], row["seed"]) == ("fp32", "3")
    assert float(row["swd_mean"]) > 0 and float(row["swd_floor"]) > 0
    assert 0.3 <= float(row["kimg"]) < 0.5
    assert (tmp_path / "runs" / "fp32-s3" / "swd.json").is_file()
    assert re.search(r"^fp32 +n=1 +mean", capsys.readouterr().out, re.M)

    # --reuse: the finished run is evaluated again, not retrained (no train time), same SWD
    checkpoints = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "fp32-s3").glob("checkpoint-*.pt")}
    assert quality.main([*argv, "--reuse"]) == 0
    (again,) = list(csv.DictReader(out.open()))
    assert again["train_s"] == "" and again["swd_mean"] == row["swd_mean"]
    assert {
        p: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "fp32-s3").glob("checkpoint-*.pt")
    } == checkpoints
