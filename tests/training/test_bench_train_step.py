"""benchmarks/bench_train_step.py: the trainer's real round, the user's batch, interleaved impls, CSV."""

import csv
import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_train_step.py"
TINY = ["--preset", "quickstart", "--fmap-base", "32", "--fmap-max", "8", "--precision", "fp32"]


def _load():
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_writes_csv_rows_per_resolution_and_impl(tmp_path):
    bench = _load()
    out = tmp_path / "steps.csv"
    args = [*TINY, "--resolutions", "4,8", "--impl", "auto,ref", "--rounds", "1", "--warmup", "0"]
    assert bench.main([*args, "--batch", "12", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(int(r["resolution"]), r["impl"]) for r in rows] == [
        (4, "auto"),
        (4, "ref"),
        (8, "auto"),
        (8, "ref"),
    ]
    assert all(float(r["sec_per_step"]) > 0 and r["precision"] == "fp32" and r["batch"] == "12" for r in rows)
    assert all(r["vs_first_impl"] == "1.000" for r in rows if r["impl"] == "auto")


def test_round_is_the_trainers_round(monkeypatch):
    bench = _load()
    config = bench.TrainingConfig.from_preset("quickstart", fmap_base=32, fmap_max=8, d_repeats=2)
    setup = bench.make_setup(
        config, 8, device=torch.device("cpu"), precision="fp32", channels=1, batch=bench.CPU_DEFAULT_BATCH
    )
    calls = []
    monkeypatch.setattr(bench, "discriminator_step", lambda ctx, reals, z, u, lod: calls.append(("D", z)))
    monkeypatch.setattr(bench, "generator_step", lambda ctx, z, lod: calls.append(("G", z)))
    monkeypatch.setattr(bench, "update_ema", lambda ema, G, beta: calls.append(("EMA", beta)))
    bench.train_round(setup)
    # minibatch_repeats x (d_repeats x (D, EMA), G)
    assert [c[0] for c in calls] == ["D", "EMA", "D", "EMA", "G"] * config.minibatch_repeats
    assert all(c[1] == config.ema_beta for c in calls if c[0] == "EMA")
    latents = [c[1] for c in calls if c[0] in ("D", "G")]
    assert all(z.shape == (bench.CPU_DEFAULT_BATCH, setup.ctx.G.latent_size) for z in latents)
    assert not any(torch.equal(a, b) for i, a in enumerate(latents) for b in latents[i + 1 :])  # fresh


def test_defaults_batch_on_cpu_and_csv_in_an_ignored_folder():
    bench = _load()
    args = bench.build_parser().parse_args([])
    assert args.batch is None and args.impl == "auto"
    assert bench.default_batch(torch.device("cpu")) == 8 and bench.default_batch(torch.device("cuda")) == 0
    first = Path(args.csv).parts[0]
    assert first + "/" in (ROOT / ".gitignore").read_text().split()  # runs/: git-ignored, not the source tree
