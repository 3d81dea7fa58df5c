"""The Triton path inside the training loop (what a GPU run uses), on CPU under TRITON_INTERPRET=1.

Runs 4x4 -> fade -> 8x8 with impl="triton" (custom ops with autocast casts, lrelu_grad_bias double
backward in the penalty, minibatch stddev kernel, pixel-norm kernel with its once-differentiable
backward in G, EMA, checkpoints) next to the same run with impl="ref".
"""

import json
import math

import pytest
import torch

from fastprogan.training.checkpoint import list_checkpoints, load_checkpoint
from fastprogan.training.config import TrainingConfig
from fastprogan.training.errors import ConfigError
from fastprogan.training.loop import Trainer
from tests.training.helpers import tiny_config


def _ticks(run_dir):
    return [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]


def test_triton_training_matches_reference_training(default_dataset, tmp_path):
    runs = {}
    for impl in ("triton", "ref"):
        config = tiny_config(default_dataset, impl=impl, total_kimg=0.256, tick_kimg_base=0.064)
        Trainer(tmp_path / impl, config, progress=False).run()
        runs[impl] = _ticks(tmp_path / impl)
    tri, ref = runs["triton"], runs["ref"]
    assert [t["resolution"] for t in tri] == [t["resolution"] for t in ref] and tri[-1]["resolution"] == 8
    assert all(math.isfinite(t["d_loss"]) and math.isfinite(t["g_loss"]) for t in tri)
    # The first tick starts from identical weights and data: the same losses up to fp32 reduction
    # order (later ticks drift apart through Adam, which amplifies rounding on near-zero gradients).
    for key in ("d_loss", "g_loss", "gp"):
        assert tri[0][key] == pytest.approx(ref[0][key], rel=1e-3, abs=1e-4), key
    final = load_checkpoint(list_checkpoints(tmp_path / "triton")[-1])
    assert final["config"]["impl"] == "triton"
    assert all(torch.isfinite(t).all() for t in final["G_ema"].values())


def test_impl_is_validated():
    with pytest.raises(ConfigError, match="impl must be one of auto, ref, triton"):
        TrainingConfig.from_preset("quickstart", impl="cuda").validate()
