"""`fastprogan import-official`, `generate --checkpoint X.pkl`, `fastprogan.load_generator`, and the
imported checkpoint through `generate`, `metrics` and `train --resume` (fine-tuning)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import fastprogan
from fastprogan.cli import main
from fastprogan.models.official import read_official
from fastprogan.training.checkpoint import list_checkpoints, load_checkpoint
from tests.models import official_format as of


@pytest.fixture(scope="module")
def pkl(tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "karras-test-16x16.pkl"
    of.write_official_pickle(path, res=16, channels=3, fmap_base=64, fmap_max=16, seed=4)
    return path


@pytest.fixture(scope="module")
def imported(pkl, tmp_path_factory):
    run = tmp_path_factory.mktemp("imported") / "run"
    assert main(["import-official", str(pkl), str(run), "--total-kimg", "0.256"]) == 0
    return run


@pytest.fixture(scope="module")
def rgb_dataset(tmp_path_factory):
    """160 blocky random 16px RGB images (the v2-1gpu minibatch at 16px is 128)."""
    from fastprogan.data import create_dataset

    root = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (160, 4, 4, 3)).astype(np.float32)
    images = np.kron(small, np.ones((1, 4, 4, 1))).astype(np.uint8)  # [160, 16, 16, 3]
    np.save(root / "src.npy", images)
    return create_dataset(root / "src.npy", root / "ds", 16, channels=3, progress=False, log=lambda m: None)


def test_import_writes_a_weights_only_checkpoint_equal_to_the_pickle(pkl, imported):
    (path,) = list_checkpoints(imported)
    state = load_checkpoint(path)  # torch.load(weights_only=True)
    assert torch.load(path, weights_only=True)["origin"] == {"kind": "official", "file": pkl.name}
    nets = read_official(pkl)
    for key, net in (("G", nets.G), ("D", nets.D), ("G_ema", nets.G_ema)):
        sd = net.state_dict()
        assert state[key].keys() == sd.keys()
        assert all(torch.equal(state[key][k], sd[k]) for k in sd), key
    assert state["meta"]["lod"] == 0.0 and state["meta"]["num_channels"] == 3
    cfg = state["config"]
    assert (cfg["resolution"], cfg["lod_initial_resolution"], cfg["fmap_base"], cfg["fmap_max"]) == (
        16,
        16,
        64,
        16,
    )
    assert cfg["preset"] == "v2-1gpu" and cfg["total_kimg"] == 0.256


def test_generate_from_the_pkl_and_from_the_import_agree(pkl, imported, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["generate", "--checkpoint", str(pkl), "--seeds", "0-3", "--out", str(a)]) == 0
    assert main(["generate", "--checkpoint", str(imported), "--seeds", "0-3", "--out", str(b)]) == 0
    for i in range(4):
        ia, ib = Image.open(a / f"seed-{i:04d}.png"), Image.open(b / f"seed-{i:04d}.png")
        assert ia.mode == "RGB" and ia.size == (16, 16)  # the network's 3 channels
        assert np.array_equal(np.asarray(ia), np.asarray(ib))
    # and they are G_ema's images: Gs of the pickle, seed 2
    nets = read_official(pkl)
    z = torch.randn(16, generator=torch.Generator().manual_seed(2))[None]
    with torch.no_grad():
        expected = (nets.G_ema(z, 0.0) * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)[0]
    assert np.array_equal(np.asarray(Image.open(a / "seed-0002.png")), expected.permute(1, 2, 0).numpy())


def test_load_generator_api(pkl, imported):
    for source in (pkl, imported):
        G = fastprogan.load_generator(source)
        assert isinstance(G, torch.nn.Module) and not G.training
        assert not any(p.requires_grad for p in G.parameters()) and G.lod == 0.0
        assert G(torch.zeros(2, G.latent_size), G.lod).shape == (2, 3, 16, 16)


def test_import_fastprogan_stays_light():
    code = "import sys, fastprogan; assert callable(fastprogan.load_generator); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("which", ["imported", "pkl"])
def test_metrics_accepts_the_imported_checkpoint_and_the_pkl(which, imported, pkl, rgb_dataset, tmp_path):
    out = tmp_path / "m.json"
    source = imported if which == "imported" else pkl
    args = ["metrics", "--checkpoint", str(source), "--data", str(rgb_dataset), "--metrics", "swd"]
    assert main([*args, "--num-images", "64", "--batch-size", "32", "--no-floor", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["resolution"] == 16 and result["swd"]["mean"] > 0


def test_train_resume_fine_tunes_the_imported_weights(imported, rgb_dataset, tmp_path):
    run = tmp_path / "ft"
    args = [
        "train",
        "--out",
        str(run),
        "--resume",
        str(imported),
        "--data",
        str(rgb_dataset),
        "--no-progress",
    ]
    assert main([*args, "--num-workers", "0"]) == 0
    final = load_checkpoint(list_checkpoints(run)[-1])
    # one round: minibatch_repeats 4 x 128 >= total_kimg 0.256
    assert final["progress"]["nimg"] == 512 and final["meta"]["resolution"] == 16
    ticks = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert ticks and all(t["lod"] == 0.0 and t["resolution"] == 16 for t in ticks)  # no regrowing
    start = load_checkpoint(list_checkpoints(imported)[-1])
    w = "blocks.16x16.conv1.weight"
    assert not torch.equal(final["G"][w], start["G"][w])  # trained ...
    assert (final["G"][w] - start["G"][w]).abs().max() < 0.5  # ... from the imported weights


def test_resume_with_other_channel_count_is_refused(imported, default_dataset, tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "x"), "--resume", str(imported), "--data", str(default_dataset)]
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "3-channel networks" in err and "1-channel images" in err and "Traceback" not in err


def test_import_refuses_a_gadget_pickle_and_writes_nothing(tmp_path, capsys):
    marker = tmp_path / "marker"

    class Gadget:
        def __reduce__(self):
            return (subprocess.call, (["touch", str(marker)],))

    evil = tmp_path / "evil.pkl"
    net = of.Network("G", {"resolution": 16}, [("4x4/Dense/weight", Gadget())])
    with of._tfutil_module():
        evil.write_bytes(pickle.dumps((net, net, net), protocol=4))
    for cmd in (
        ["import-official", str(evil), str(tmp_path / "out")],
        ["generate", "--checkpoint", str(evil), "--out", str(tmp_path / "g")],
    ):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert "refused global subprocess.call" in err and err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_import_refuses_conditional_networks(tmp_path, capsys):
    p = tmp_path / "cond.pkl"
    of.write_official_pickle(p, res=8, extra_kwargs={"label_size": 4})
    assert main(["import-official", str(p), str(tmp_path / "out")]) == 2
    assert "conditional networks are not supported" in capsys.readouterr().err
