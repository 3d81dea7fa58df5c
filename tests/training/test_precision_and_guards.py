"""fp16 / bf16 runs on CPU, the precision policy, and the NaN guard."""

import math

import pytest
import torch

from fastprogan.training import precision as P
from fastprogan.training.checkpoint import list_checkpoints, load_checkpoint
from fastprogan.training.errors import ConfigError, NonFiniteError
from fastprogan.training.loop import Trainer
from fastprogan.training.precision import resolve_precision
from tests.training.helpers import all_tensors, tiny_config


def test_policy_defaults_and_fp16_settings():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).name == ("bf16" if P.cpu_has_native_bf16() else "fp32")
    fp16 = resolve_precision("fp16", cpu)
    assert (fp16.autocast_dtype, fp16.use_loss_scaler, fp16.pixelnorm_eps) == (torch.float16, True, 1e-4)
    assert fp16.make_scaler().get_scale() == 64.0
    bf16 = resolve_precision("bf16", cpu)
    assert (bf16.autocast_dtype, bf16.use_loss_scaler, bf16.pixelnorm_eps) == (torch.bfloat16, False, 1e-8)
    with pytest.raises(ConfigError, match="fp8"):
        resolve_precision("fp8", cpu)


@pytest.mark.parametrize(
    ("caps", "expect"),
    [({"avx512_bf16": True}, "bf16"), ({"amx_bf16": True}, "bf16"), ({"avx2": True}, "fp32"), ({}, "fp32")],
)
def test_auto_on_cpu_follows_torchs_capability_query(monkeypatch, caps, expect):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps, raising=False)  # torch >= 2.13
    policy = resolve_precision("auto", torch.device("cpu"))
    assert policy.name == expect
    assert policy.autocast_dtype == (torch.bfloat16 if expect == "bf16" else None)
    why = "this CPU has native bf16" if expect == "bf16" else "no native bf16 on this CPU"
    assert P.describe_precision("auto", policy) == f"{expect} (auto: {why})"
    assert P.describe_precision("fp32", resolve_precision("fp32", torch.device("cpu"))) == "fp32"


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expect"), [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")]
)
def test_auto_on_cpu_with_the_older_torch_queries(monkeypatch, avx512_bf16, amx, expect):
    # torch 2.11 has no torch.cpu.get_capabilities, only the private per-feature queries.
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert P.default_precision(torch.device("cpu")) == expect
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert P.default_precision(torch.device("cpu")) == "fp32"  # no query at all: the safe choice


def test_auto_records_what_it_picked(monkeypatch, default_dataset, tmp_path):
    import json

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True}, raising=False)
    config = tiny_config(default_dataset, precision="auto", total_kimg=0.016)  # one D+G round
    Trainer(tmp_path, config, progress=False).run()
    assert load_checkpoint(list_checkpoints(tmp_path)[-1])["meta"]["precision"] == "bf16"
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["precision"] == "auto" and saved["resolved_precision"] == "bf16"
    assert "precision bf16 (auto: this CPU has native bf16)" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_a_few_ticks_with_finite_losses(precision, default_dataset, tmp_path):
    config = tiny_config(default_dataset, precision=precision, total_kimg=0.384)  # 4x4, fade, 8x8
    Trainer(tmp_path, config, progress=False).run()
    final = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert final["meta"]["precision"] == precision
    assert final["meta"]["pixelnorm_eps"] == (1e-4 if precision == "fp16" else 1e-8)
    import json

    ticks = [json.loads(x) for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert len(ticks) == 6 and ticks[-1]["resolution"] == 8
    assert all(math.isfinite(t["d_loss"]) and math.isfinite(t["g_loss"]) for t in ticks)
    if precision == "fp16":
        assert final["scaler_D"]["scale"] > 0 and final["scaler_G"]["scale"] > 0
    for name, t in all_tensors(final["G"]).items():
        assert t.dtype == torch.float32 and torch.isfinite(t).all(), name  # parameters stay fp32


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(default_dataset, tmp_path):
    trainer = Trainer(tmp_path, tiny_config(default_dataset, snapshot_ticks=1), progress=False)
    trainer.run(stop_after_ticks=2)
    good = list_checkpoints(tmp_path)
    assert good and good[-1].name == "checkpoint-000000128.pt"
    with torch.no_grad():
        trainer.G.blocks["4x4"].conv.weight[0, 0, 0, 0] = float("nan")  # injected NaN
    with pytest.raises(
        NonFiniteError, match=r"G loss \(nan\).* went non-finite at kimg .*/checkpoint-000000128\.pt"
    ):
        trainer.run()
    assert list_checkpoints(tmp_path) == good
    state = load_checkpoint(good[-1])
    assert all(torch.isfinite(t).all() for t in all_tensors(state["G"]).values())


def test_nan_in_weights_is_named(default_dataset, tmp_path):
    trainer = Trainer(tmp_path, tiny_config(default_dataset), progress=False)
    with torch.no_grad():
        trainer.D.blocks["4x4"].dense1.weight.fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="non-finite"):
        trainer.run()
    assert list_checkpoints(tmp_path) == []


def test_batch_auto_on_cpu_uses_the_preset_and_says_so(default_dataset, tmp_path):
    Trainer(tmp_path, tiny_config(default_dataset, batch="auto", total_kimg=0.064), progress=False).run()
    log = (tmp_path / "log.txt").read_text()
    assert "--batch auto needs a CUDA device; using the preset's minibatch" in log
    assert "minibatch 16 " in log


def test_metrics_option_without_the_metrics_package_is_a_clear_error(default_dataset, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "fastprogan.metrics", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match="--metrics needs fastprogan.metrics"):
        Trainer(tmp_path, tiny_config(default_dataset, metrics=("swd",)), progress=False)
