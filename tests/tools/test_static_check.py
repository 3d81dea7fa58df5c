"""The static GPU check compiles the real configs clean and rejects a config that would fail on a GPU.

The full check (every config, fp32/fp16/bf16, sm_80 and sm_90: ~224 compiles, ~100 s on 2 cores) is
its own CI step: ``python -m fastprogan.tools.static_check``. Here the fp32 configs of every kernel
for both archs (~76 compiles) plus one deliberately spilling config run in a subprocess (the check
must import the kernels with TRITON_INTERPRET=0, which this interpreter-mode test process cannot).
"""

import subprocess
import sys
from pathlib import Path

from fastprogan.tools.static_check import SMEM_LIMIT, Result, occupancy, verdict

ROOT = Path(__file__).resolve().parents[2]


def test_real_fp32_configs_pass_and_an_oversized_tile_is_rejected():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastprogan.tools.static_check",
            "--dtype",
            "fp32",
            "--oversized",
            "--modules",
            "bias_act",
            "minibatch_stddev",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out  # the oversized config fails the run
    fails = [line for line in run.stderr.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 4 and all("OVERSIZED" in f for f in fails), out  # 2 configs x sm_80, sm_90
    assert sum("spills" in f for f in fails) == 2, out  # the 512 x 64 pixel-norm tile
    assert sum("2048 threads per block > 1024" in f for f in fails) == 2, out  # the 64-warp block
    table_rows = [
        line for line in run.stdout.splitlines() if line.startswith("| bias_") or "_kernel[" in line
    ]
    assert sum("| ok |" in row for row in table_rows) >= 30, out  # every real fp32 config compiled clean
    for kernel in (
        "bias_lrelu_fwd",
        "lrelu_grad",
        "bias_act_pixel_norm_fwd",
        "bias_act_pixel_norm_bwd",
        "sum_rows",
        "minibatch_stddev_fwd",
    ):
        assert any(f"{kernel}_kernel[fp32" in row and "| ok |" in row for row in table_rows), kernel


def test_fused_conv_largest_tiles_compile_clean():
    """The 128-channel tiles of the conv kernels (every variant: 3x3 / 4x4 conv, parity, weight
    gradient) in bf16 for sm_80 and sm_90 (the full set, 187 configs x 2 archs, is the CI step's:
    ~15 min on 2 cores)."""
    run = subprocess.run(
        [
            *(sys.executable, "-m", "fastprogan.tools.static_check", "--modules", "conv2d_bias_act"),
            *("--dtype", "bf16", "--match", "BLOCK_N=128,", "--full-table"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    rows = [line for line in run.stdout.splitlines() if "_kernel[bf16" in line]
    assert len(rows) == 2 * (7 + 5 + 4) and all("| ok |" in row for row in rows), out
    for kernel in ("conv2d_act_kernel", "upscale_conv2d_act_kernel", "conv2d_weight_grad_kernel"):
        assert any(row.startswith(f"| {kernel}[") for row in rows), (kernel, out)


def test_verdict_rejects_shared_memory_over_the_block_limit_and_spills():
    fit = Result("k", 90, regs=128, spill_bytes=0, smem=SMEM_LIMIT[90])
    assert verdict(fit) == []
    assert "shared memory" in verdict(Result("k", 80, regs=64, spill_bytes=0, smem=SMEM_LIMIT[80] + 1))[0]
    assert "spills" in verdict(Result("k", 80, regs=255, spill_bytes=8, smem=0))[0]
    assert "compile error" in verdict(Result("k", 80, error="boom"))[0]


def test_verdict_rejects_blocks_over_1024_threads_and_over_the_register_file():
    assert verdict(Result("k", 80, num_warps=32, regs=64, spill_bytes=0, smem=0)) == []  # 1024 x 64 = 65536
    assert verdict(Result("k", 90, num_warps=64, regs=16, spill_bytes=0, smem=0)) == [
        "2048 threads per block > 1024"
    ]
    (why,) = verdict(Result("k", 80, num_warps=16, regs=136, spill_bytes=0, smem=0))
    assert why == "136 registers x 512 threads > the SM's 65536-register file"


def test_occupancy_estimate():
    assert occupancy(80, 32, 4, 0) == 1.0  # 16 blocks x 4 warps fill the 64 warp slots
    assert occupancy(90, 255, 8, 0) == 0.125  # 8 KB regs/warp -> 8 warps per SM
    assert occupancy(80, 32, 4, 100_000) == 4 / 64  # one block by shared memory
