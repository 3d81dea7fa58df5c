"""--metrics during training: evaluate() on G_ema at the current lod, results in log.txt/stats.jsonl."""

import json

from fastprogan.training.loop import Trainer
from tests.training.helpers import tiny_config


def test_metrics_hook_calls_evaluate_and_logs(default_dataset, tmp_path, monkeypatch):
    import fastprogan.metrics

    calls = []

    def fake_evaluate(generate_fn, reals_iter, *, metrics, num_images, seed, device, **kw):
        import torch

        fakes = generate_fn(4, torch.Generator().manual_seed(0))
        reals = next(iter(reals_iter))
        calls.append((tuple(metrics), num_images, tuple(fakes.shape), reals.dtype, tuple(reals.shape[1:])))
        return {"swd_mean": 1.5, "metrics": list(metrics)}

    monkeypatch.setattr(fastprogan.metrics, "evaluate", fake_evaluate)
    config = tiny_config(
        default_dataset, total_kimg=0.128, metrics=("swd",), metrics_every_ticks=1, metrics_images=32
    )
    Trainer(tmp_path, config, progress=False).run()
    assert len(calls) == 2  # one per tick
    assert calls[0][:3] == (("swd",), 32, (4, 1, 4, 4))
    assert str(calls[0][3]) == "torch.uint8" and calls[0][4] == (1, 4, 4)
    assert "metrics at kimg 0.1: swd_mean 1.5000" in (tmp_path / "log.txt").read_text()
    lines = [json.loads(x) for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert any("metrics" in x and x["metrics"]["swd_mean"] == 1.5 for x in lines)


def test_metrics_with_the_real_evaluate(default_dataset, tmp_path):
    """The real fastprogan.metrics.evaluate (SWD) runs inside training at 16px."""
    config = tiny_config(
        default_dataset,
        lod_training_kimg=0.0,
        lod_transition_kimg=0.064,
        total_kimg=0.192,
        metrics=("swd",),
        metrics_every_ticks=3,
        metrics_images=64,
    )
    Trainer(tmp_path, config, progress=False).run()
    lines = [json.loads(x) for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    results = [x["metrics"] for x in lines if "metrics" in x]
    assert len(results) == 1 and results[0]["swd"]["mean"] > 0
    assert "metrics at kimg 0.2: swd.16 " in (tmp_path / "log.txt").read_text()
