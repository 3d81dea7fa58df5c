"""benchmarks/bench_cpu_peer.py: a missing peer clone is named, widths are checked, rounds are interleaved.

The real peer (pytorch_GAN_zoo) is never bundled; these tests drive the benchmark with a stand-in
``models/progressive_gan.py`` written here that has the peer's interface and counts its rounds.
"""

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "bench_cpu_peer", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cpu_peer.py"
)
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

STAND_IN = """
import time

import torch

ROUNDS = []


class ProgressiveGAN:
    def __init__(self, dimLatentVector=512, depthScale0=512, **kwargs):
        self.kwargs = dict(kwargs, dimLatentVector=dimLatentVector, depthScale0=depthScale0)
        self.config = type("Config", (), {"learningRate": kwargs["baseLearningRate"]})()
        self.depths = [depthScale0]
        self.netD = self.netG = torch.nn.Linear(2, 2)
        self.optimizerD = self.getOptimizerD()

    def getOptimizerD(self):
        raise AssertionError("the benchmark's subclass replaces the peer's optimizers")

    def addScale(self, depth):
        self.depths.append(depth)

    def getSize(self):
        side = 4 * 2 ** (len(self.depths) - 1)
        return (side, side)

    def optimizeParameters(self, reals):
        ROUNDS.append((tuple(reals.shape), tuple(self.depths), self.kwargs["lambdaGP"]))
        time.sleep(0.05)  # a time the CSV's ms columns can hold
        return {}
"""


def _stand_in_checkout(root: Path) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "progressive_gan.py").write_text(STAND_IN)
    return root


def test_missing_peer_checkout_is_named(tmp_path):
    with pytest.raises(
        SystemExit, match=r"--peer-checkout PATH is required: a clone of https://github\.com/"
    ):
        bench.main([])
    with pytest.raises(SystemExit, match="no such directory"):
        bench.main(["--peer-checkout", str(tmp_path / "absent")])
    with pytest.raises(SystemExit, match=r"models/progressive_gan\.py is missing"):
        bench.main(["--peer-checkout", str(tmp_path)])


def test_peer_widths_are_progans_table():
    config = bench.TrainingConfig.from_preset(bench.OUR_PRESET)
    scales = bench.PEER_DEFAULTS["depthScales"]
    assert bench.check_widths(scales, config, 16) == [512, 512, 512]
    assert bench.check_widths(scales, config, 64) == [512, 512, 512, 512, 256]
    with pytest.raises(ValueError, match="differ from fastprogan's widths"):
        bench.check_widths([512, 256, 128], config, 16)
    with pytest.raises(ValueError, match="power of two"):
        bench.check_widths(scales, config, 24)


def test_rounds_interleave_and_alternate_order():
    calls = []
    times = bench.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up round, then 3 timed rounds
    assert [len(v) for v in times.values()] == [3, 3]


def test_main_times_both_sides_and_writes_a_row(tmp_path):
    root = _stand_in_checkout(tmp_path / "zoo")
    out = tmp_path / "peer.csv"
    try:
        rc = bench.main(
            [
                *("--peer-checkout", str(root), "--resolutions", "4", "--batches", "4", "--rounds", "2"),
                *("--warmup", "0", "--threads", "1", "--precision", "fp32", "--csv", str(out)),
            ]
        )
        peer = sys.modules["models.progressive_gan"]
        assert peer.__file__.startswith(str(root))
        assert peer.ROUNDS == [((4, 3, 4, 4), (512,), 10.0)] * 2  # the paper's 4x4 width, WGAN-GP lambda 10
    finally:
        for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
            del sys.modules[name]
        sys.path.remove(str(root))
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["resolution"] == "4" and rows[0]["precision"] == "fp32"
    assert rows[0]["peer_commit"] == "unknown"  # not a git clone of its own
    ratio = float(rows[0]["peer_ms"]) / float(rows[0]["ours_ms"])
    assert ratio == pytest.approx(float(rows[0]["peer_over_ours"]), rel=1e-2)
