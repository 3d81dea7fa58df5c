"""The acceptance of `fastprogan bench` without a GPU: the CPU dry run writes every file, and a kill
mid-run leaves a valid results.csv holding the rows measured so far."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastprogan.bench.ops import OP_PROBLEMS
from fastprogan.bench.runner import CSV_COLUMNS
from fastprogan.bench.train import TRAIN_PROVIDERS
from fastprogan.ops import dispatch_table

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("TRITON_INTERPRET", None)  # the CLI must set it itself for the CPU smoke
    return env


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == CSV_COLUMNS
        rows = list(reader)
    for row in rows:
        assert None not in row and None not in row.values(), f"a cut or overlong row: {row}"
    return rows


def test_cpu_quick_dry_run_writes_every_file(tmp_path):
    out = tmp_path / "dry"
    cmd = [sys.executable, "-m", "fastprogan", "bench", "--device", "cpu", "--quick", "--out", str(out)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert took < 180, f"the dry run took {took:.0f}s (acceptance: under 3 minutes)"

    rows = _rows(out / "results.csv")
    smoke = [r for r in rows if r["measure"] == "smoke"]
    assert smoke and all(r["status"] == "ok" for r in smoke), [r for r in smoke if r["status"] != "ok"]
    assert {r["mode"] for r in smoke} == {"fwd", "bwd", "double_bwd"}
    assert {r["dtype"] for r in smoke} == {"fp32", "bf16", "fp16"}

    every_train = [r for r in rows if r["measure"] == "train"]
    assert {r["provider"] for r in every_train} == set(TRAIN_PROVIDERS.names())  # each has a row
    assert all(r["status"] in ("ok", "skipped") for r in every_train), every_train
    train = [r for r in every_train if r["status"] == "ok"]
    assert {"eager-ref", "fastprogan", "compile-ref"} <= {r["provider"] for r in train}
    assert {r["dtype"] for r in train} == {"fp32", "bf16"}
    assert all(float(r["img_per_s"]) > 0 and float(r["sec_per_kimg"]) > 0 for r in train)

    op_rows = [r for r in rows if r["measure"] == "ops"]
    ok_ops = {r["name"] for r in op_rows if r["status"] == "ok"}
    assert ok_ops == set(OP_PROBLEMS.names()), (
        f"ops without a measured row: {set(OP_PROBLEMS.names()) - ok_ops}"
    )
    assert not [r for r in op_rows if r["status"] == "error"]
    # The interpreter is never timed: Triton-only kernels are skipped on CPU, with the reason.
    skipped = [r for r in op_rows if r["status"] == "skipped"]
    assert skipped and all("interpreter" in r["detail"] for r in skipped)
    assert all(int(r["bytes"]) > 0 for r in op_rows if r["status"] == "ok")

    table = json.loads((out / "dispatch_table.json").read_text())
    entries = dispatch_table.validate_table(table, "dispatch_table.json")
    assert set(entries) == {"upscale_conv2d", "conv2d_downscale"}
    # The fused conv kernels' choices (triton vs cudnn) are listed, and skipped off CUDA with the reason.
    fused = [r for r in rows if r["measure"] == "dispatch" and "bias_act" in r["name"]]
    assert {r["name"] for r in fused} == {
        "conv2d_bias_act",
        "conv2d_downscale_bias_act",
        "upscale_conv2d_bias_act",
    }, fused
    assert all(r["status"] == "skipped" and "interpreter" in r["detail"] for r in fused), fused
    assert all(v in ("fused", "ref") for e in entries.values() for v in e.values())

    report = (out / "report.md").read_text()
    for heading in ("Correctness smoke", "Training iteration", "Per op", "Dispatch table"):
        assert f"## {heading}" in report
    assert "## Failures" not in report
    assert list(out.glob("*.png"))
    env = json.loads((out / "env.json").read_text())
    assert env["device_type"] == "cpu" and env["versions"]["torch"]


def test_kill_mid_run_keeps_a_valid_csv(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fastprogan.bench", "--device", "cpu", "--quick", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    csv_path = out / "results.csv"
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            if csv_path.is_file() and len(csv_path.read_text().splitlines()) >= 4:  # header + 3 rows
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    rows = _rows(csv_path)
    assert len(rows) >= 3
    assert all(r["measure"] and r["status"] and r["timestamp"] for r in rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dtypes", "fp8"], "--dtypes: unknown fp8"),
        pytest.param(
            ["--device", "cuda"],
            "no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA"),
        ),
        (["--budget-s", "0"], "--budget-s must be > 0"),
        (["--providers", "warp-drive"], "--providers: unknown warp-drive"),
        (["--resolutions", "6"], "powers of two"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message, capsys):
    from fastprogan.cli import main

    code = main(["bench", "--out", str(tmp_path / "o"), "--quick", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing half-written
