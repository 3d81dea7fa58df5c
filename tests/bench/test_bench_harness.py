"""The bench's parts in-process: planner, CSV writer, registries, smoke verdicts, report, dispatch table."""

import csv
import sys

import pytest
import torch

from fastprogan.bench import env, report, runner, smoke
from fastprogan.bench.dispatch import table_from_rows
from fastprogan.bench.registry import Registry
from fastprogan.bench.runner import CSV_COLUMNS, Options, ResultsWriter, Session, Task
from fastprogan.ops import dispatch_table


def _session(tmp_path, budget_s=100.0, **kw):
    options = Options(out=tmp_path, device=torch.device("cpu"), quick=True, budget_s=budget_s, **kw)
    writer = ResultsWriter(tmp_path / "results.csv", {"device": "cpu (test)"})
    return Session(options, "cpu (test)", None, writer)


def _read(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_writer_flushes_every_row_before_close(tmp_path):
    s = _session(tmp_path)
    s.writer.write({"measure": "ops", "name": "a", "status": "ok", "median_ms": 1.25})
    rows = _read(tmp_path / "results.csv")  # the file is still open: the row is already on disk
    assert len(rows) == 1 and rows[0]["median_ms"] == "1.25" and rows[0]["device"] == "cpu (test)"
    with pytest.raises(KeyError, match="no column 'speed'"):
        s.writer.write({"speed": 1})
    s.writer.close()


def test_planner_leaves_out_what_does_not_fit_and_learns_from_finished_tasks(tmp_path):
    s = _session(tmp_path)
    ran = []

    def task(label, est, kind="k"):
        return Task("ops", label, est, lambda: ran.append(label) or [{"name": label, "status": "ok"}], kind)

    # Window 10 s: "big" (est 50 s) cannot fit; the small ones run.
    runner.run_tasks(s, "ops", [task("a", 0.01), task("big", 50.0, "b"), task("b", 0.01)], window_s=10.0)
    assert ran == ["a", "b"]
    assert s.left_out["ops"] == ["big (needs ~50s)"]
    # The estimate is scaled by how long finished tasks of the same kind took: "slow" took ~200x its
    # 1 ms estimate, so a 10 ms estimate of that kind becomes ~2 s and no longer fits a 1 s window.
    ran.clear()
    time = __import__("time")
    slow = Task("ops", "slow", 1e-3, lambda: [time.sleep(0.2) or {"name": "slow", "status": "ok"}], "s")
    runner.run_tasks(s, "train", [slow, task("again", 1e-2, kind="s"), task("other", 1e-2)], window_s=1.0)
    assert ran == ["other"] and s.left_out["train"][0].startswith("again")


def test_a_failing_task_becomes_an_error_row_and_the_rest_runs(tmp_path):
    s = _session(tmp_path)

    def boom():
        raise RuntimeError("CUDA out of memory\nsecond line")

    tasks = [
        Task("ops", "x", 0.0, lambda: runner.attempt({"name": "x", "provider": "p"}, boom)),
        Task("ops", "y", 0.0, lambda: [{"name": "y", "status": "ok"}]),
    ]
    runner.run_tasks(s, "ops", tasks, window_s=None)
    s.writer.close()
    rows = _read(tmp_path / "results.csv")
    assert [(r["name"], r["status"]) for r in rows] == [("x", "error"), ("y", "ok")]
    assert rows[0]["provider"] == "p" and rows[0]["detail"] == "RuntimeError: CUDA out of memory second line"


def test_spread_order_covers_the_range_first():
    assert runner.spread([4, 8, 16, 32, 64, 128, 256, 512, 1024]) == [4, 1024, 64, 16, 256, 8, 32, 128, 512]
    assert sorted(runner.spread(list(range(7)))) == list(range(7))


def test_registry_rejects_duplicates_and_names_the_known_entries():
    reg = Registry("provider")
    reg.register("a", "first")(lambda: 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", "again")(lambda: 2)
    with pytest.raises(KeyError, match="registered: a"):
        reg["b"]
    assert reg.names() == ["a"] and reg["a"].description == "first"


def test_peak_bandwidth_by_device_name():
    assert env.peak_bandwidth("NVIDIA H200") == 4.8e12
    assert env.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert env.peak_bandwidth("NVIDIA A100-SXM4-80GB") == pytest.approx(2.039e12)
    assert env.peak_bandwidth("NVIDIA GH200 480GB") == 4.0e12  # not H200's
    assert env.peak_bandwidth("Some Future GPU") is None


def test_smoke_marks_a_wrong_kernel_failed_and_the_run_exits_1(tmp_path, monkeypatch):
    # A "kernel" 1% off its reference must fail; the report lists it first; the run returns 1.
    wrong = smoke.SmokeCase(
        "off_by_one_percent",
        "none",
        lambda x: 1.01 * smoke.pixel_norm_ref(x),
        smoke.pixel_norm_ref,
        smoke._x,
        (True,),
        (False,),
        1,
    )
    right = smoke.SmokeCase(
        "exact", "none", smoke.pixel_norm_ref, smoke.pixel_norm_ref, smoke._x, (True,), (False,), 1
    )
    monkeypatch.setattr(smoke, "CASES", [right, wrong])
    options = Options(
        out=tmp_path, device=torch.device("cpu"), quick=True, measures=("smoke",), dtypes=("fp32", "bf16")
    )
    assert runner.run(options) == 1
    rows = _read(tmp_path / "results.csv")
    verdict = {(r["name"], r["dtype"], r["mode"]): r["status"] for r in rows}
    assert verdict[("exact", "fp32", "fwd")] == "ok" and verdict[("exact", "bf16", "bwd")] == "ok"
    assert verdict[("off_by_one_percent", "fp32", "fwd")] == "failed"
    assert verdict[("off_by_one_percent", "bf16", "bwd")] == "failed"
    text = (tmp_path / "report.md").read_text()
    assert text.index("## Failures") < text.index("## Correctness smoke")
    assert "off_by_one_percent" in text.split("## Correctness smoke")[0]


def test_report_without_matplotlib_says_so_and_keeps_the_tables(tmp_path, monkeypatch):
    s = _session(tmp_path)
    for provider, ms in (("eager-ref", 2.0), ("fastprogan", 1.0)):
        s.writer.write(
            {
                "measure": "ops",
                "name": "bias_act",
                "provider": provider,
                "resolution": 8,
                "dtype": "fp32",
                "mode": "fwd",
                "status": "ok",
                "median_ms": ms,
                "iqr_ms": 0.1,
            }
        )
    s.writer.close()
    with (tmp_path / "results.csv").open("a") as f:
        f.write("ops,bias_act,cut-by-a-kill")  # a last line cut mid-write is dropped
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    paths = report.write_report(tmp_path)
    assert [p.name for p in paths] == ["report.md"]
    text = (tmp_path / "report.md").read_text()
    assert "matplotlib is not installed" in text
    assert "| bias_act | 8 | fp32 | fwd | fastprogan | 1 (0.1) |" in text and "| 2 |" in text  # x2 vs eager


def test_dispatch_table_from_rows_picks_the_fastest_and_validates(tmp_path):
    key = dispatch_table.shape_key(n=4, c_in=8, c_out=8, h=4, w=4, dtype=torch.float32, backward=True)
    rows = [
        {
            "measure": "dispatch",
            "name": "upscale_conv2d",
            "provider": "fused",
            "status": "ok",
            "median_ms": "2.0",
            "detail": f"key {key}; winner ref",
        },
        {
            "measure": "dispatch",
            "name": "upscale_conv2d",
            "provider": "ref",
            "status": "ok",
            "median_ms": "1.0",
            "detail": f"key {key}; winner ref",
        },
        {
            "measure": "dispatch",
            "name": "upscale_conv2d",
            "provider": "ref",
            "status": "error",
            "median_ms": "",
            "detail": "x",
        },
    ]
    table = table_from_rows(rows, "NVIDIA H200")
    assert dispatch_table.validate_table(table, "t") == {"upscale_conv2d": {key: "ref"}}
    assert table["device"] == "NVIDIA H200" and table["format"] == dispatch_table.FORMAT_VERSION


def test_every_csv_column_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md").read_text()
    missing = [c for c in CSV_COLUMNS if f"`{c}`" not in doc]
    assert not missing, f"docs/benchmarks.md does not describe the columns {missing}"


def test_report_only_rewrites_the_report_from_the_csv(tmp_path, capsys):
    from fastprogan.cli import main

    assert main(["bench", "--report-only", "--out", str(tmp_path)]) == 2  # no results.csv yet
    assert "does not exist" in capsys.readouterr().err
    s = _session(tmp_path)
    s.writer.write(
        {"measure": "smoke", "name": "bias_act", "dtype": "bf16", "mode": "fwd", "status": "failed"}
    )
    s.writer.close()
    assert main(["bench", "--report-only", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Failures (1 rows)" in text and "0 of 1 rows passed" in text


def test_op_bytes_come_from_the_traffic_counter_on_the_gpu_path():
    from fastprogan.bench.ops import OP_PROBLEMS, counted_bytes
    from fastprogan.bench.shapes import QUICK_BATCH, QUICK_CHANNELS

    problem = OP_PROBLEMS["bias_act"].factory(8, torch.float32, True)
    n, c = QUICK_BATCH, QUICK_CHANNELS
    # One fused kernel: read x and the bias, write y (fp32).
    assert counted_bytes(problem, "fwd") == 4 * (2 * n * c * 8 * 8 + c)
    # Forward + backward moves more than the forward.
    assert counted_bytes(problem, "fwd+bwd") > counted_bytes(problem, "fwd")


def test_timed_backward_does_not_accumulate_gradients():
    from fastprogan.bench.ops import OP_PROBLEMS, make_call

    problem = OP_PROBLEMS["bias_act_pixel_norm"].factory(4, torch.float32, True)
    inputs = problem.inputs(torch.device("cpu"))
    call = make_call(problem.ref, inputs, "fwd+bwd")
    first = call()
    second = call()
    assert all(t.grad is None for t in inputs)  # autograd.grad, not .backward(): no add_ per call
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_paper_shapes_build_and_count_on_meta():
    # The GPU run's problems at the paper's shapes (nf(R), v2-1gpu batch), counted on meta tensors:
    # proves every shape and GPU path of the plan without a GPU (bf16 forward + backward).
    from fastprogan.bench.ops import OP_PROBLEMS, counted_bytes
    from fastprogan.bench.shapes import RESOLUTIONS, batch_for

    seen = 0
    for entry in OP_PROBLEMS:
        for r in RESOLUTIONS:
            problem = entry.factory(r, torch.bfloat16, False)
            if problem is None:
                continue
            assert problem.batch == (batch_for(r)), (entry.name, r)
            assert counted_bytes(problem, problem.modes[0]) > 0, (entry.name, r)
            seen += 1
    assert seen == 5 * 9 + 6 * 8  # the resampling and fused conv layers start at 8x8
