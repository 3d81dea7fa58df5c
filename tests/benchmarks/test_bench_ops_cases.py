"""benchmarks/bench_ops.py on CPU: block cases straddle the fused thresholds and say which path ran."""

import importlib.util
from pathlib import Path

import pytest
import torch

if torch.cuda.is_available():
    pytest.skip("the CPU case selection is what is tested (this machine has CUDA)", allow_module_level=True)

SPEC = importlib.util.spec_from_file_location(
    "bench_ops", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_ops.py"
)
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def test_block_batches_straddle_each_ops_threshold():
    for op, threshold in (("g_block", bench.upscale_threshold), ("d_block", bench.downscale_threshold)):
        for r in (8, 16, 32):
            _, _, _, side = bench._conv_shape(op, r)
            ns = bench.batches(op, r)
            paths = [bench.provider_path(op, "fastprogan", r, n) for n in ns]
            assert paths[-1] == "conv fused + epilogue ref" and ns[-1] * side * side >= threshold
            if side * side < threshold:  # a batch below the threshold exists: the control case
                assert len(ns) == 2 and paths[0] == "conv ref + epilogue ref"
                assert ns[0] * side * side < threshold <= (ns[0] + 1) * side * side


def test_cases_compare_different_code_and_label_every_provider():
    cases = [p.values for p in bench._cases()]
    assert cases
    for op, r, n, _, _, provider in cases:
        path = bench.provider_path(op, provider, r, n)
        assert path in ("ref", "compile(ref)") or path.startswith("conv "), (op, provider, path)
    # CPU epilogues run the reference under impl="auto": no fastprogan rows that would only time noise
    assert not [c for c in cases if c[5] == "fastprogan" and c[0] not in ("g_block", "d_block")]
