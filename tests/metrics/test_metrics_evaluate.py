"""evaluate() with a tiny generator, to_uint8, and the ``fastprogan metrics`` command end to end."""

from __future__ import annotations

import json
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from fastprogan.metrics import evaluate, to_uint8
from fastprogan.metrics.cli import as_nchw, iterate_reals


class TinyGenerator(torch.nn.Module):
    """A stand-in for G_ema: z [N, 8] -> images in [-1, 1], [N, C, R, R]."""

    latent_size = 8

    def __init__(self, resolution: int = 32, channels: int = 3) -> None:
        super().__init__()
        self.resolution, self.channels = resolution, channels
        self.fc = torch.nn.Linear(8, channels * 4 * 4)

    def forward(self, z: torch.Tensor, lod: float = 0.0) -> torch.Tensor:
        x = self.fc(z).view(-1, self.channels, 4, 4)
        x = torch.nn.functional.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False)
        return torch.tanh(x)


def generate_fn(G: torch.nn.Module):
    def generate(n: int, generator: torch.Generator) -> torch.Tensor:
        return G(torch.randn(n, 8, generator=generator))

    return generate


def random_reals(n: int, resolution: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, channels, resolution, resolution), dtype=np.uint8)


def test_to_uint8_maps_rounds_clips_and_tiles() -> None:
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 7)
    out = to_uint8(x)
    assert out.dtype == torch.uint8
    # 0.0 -> 127.5 and -0.5 -> 63.75, 0.5 -> 191.25: rounded half-to-even / nearest.
    assert out.flatten().tolist() == [0, 0, 64, 128, 191, 255, 255]
    assert to_uint8(x, rgb=True).shape == (1, 3, 1, 7)


def test_evaluate_all_metrics_with_floor_and_skipped_fid(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("FASTPROGAN_INCEPTION", raising=False)
    reals = random_reals(140)
    batches = (torch.from_numpy(reals[i : i + 24]) for i in range(0, 140, 24))
    with pytest.warns(UserWarning, match="FID skipped"):
        result = evaluate(
            generate_fn(TinyGenerator().eval()), batches, num_images=64, num_pairs=9, batch_size=10, seed=1
        )
    assert result["num_images"] == 64
    assert set(result["swd"]) == {"32", "16", "mean"}
    assert set(result["swd_real_floor"]) == {"32", "16", "mean"}
    # Independent random images vs blurry fakes: the floor is far below the real-vs-fake distance.
    assert result["swd_real_floor"]["mean"] < result["swd"]["mean"]
    assert result["msssim_pairs"] == 9
    assert 0.0 < result["msssim"] <= 1.0
    assert result["fid"] is None and "--inception" in result["fid_skipped"]
    json.dumps(result)


def test_evaluate_without_enough_reals_for_the_floor() -> None:
    reals = [torch.from_numpy(random_reals(50))]
    result = evaluate(generate_fn(TinyGenerator()), reals, metrics=("swd",), num_images=40, batch_size=16)
    assert "swd_real_floor" not in result
    assert any("floor skipped" in note for note in result["notes"])
    short = evaluate(generate_fn(TinyGenerator()), reals, metrics=("swd",), num_images=64, swd_floor=False)
    assert short["num_images"] == 50 and any("only 50" in note for note in short["notes"])


def test_evaluate_fid_with_a_given_extractor() -> None:
    class Features(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # float [N, 3, H, W] on 0..255
            # Few dimensions keep sqrtm cheap; real Inception features are 2048-d.
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x[:, :, :2, :2].flatten(1)], dim=1) / 255

    reals = [torch.from_numpy(random_reals(30, channels=1))]
    G = TinyGenerator(channels=1)
    result = evaluate(
        generate_fn(G), reals, metrics=("fid",), num_images=30, batch_size=7, inception=Features()
    )
    assert result["fid"] > 0
    same = evaluate(
        lambda n, g: torch.from_numpy(random_reals(30, channels=1)).float()[:n] / 127.5 - 1,
        reals,
        metrics=("fid",),
        num_images=30,
        batch_size=30,
        inception=Features(),
    )
    assert same["fid"] == pytest.approx(0.0, abs=1e-3)


def test_evaluate_rejects_unknown_metric() -> None:
    with pytest.raises(ValueError, match="unknown"):
        evaluate(generate_fn(TinyGenerator()), [], metrics=("is",))


def test_layouts_and_downsampling_of_reals() -> None:
    nhwc = np.zeros((5, 8, 8, 3), np.uint8)
    assert as_nchw(nhwc).shape == (5, 3, 8, 8)
    assert as_nchw(np.zeros((5, 8, 8), np.uint8)).shape == (5, 1, 8, 8)
    images = np.arange(2 * 16 * 16, dtype=np.uint8).reshape(2, 1, 16, 16) % 200
    batches = list(iterate_reals(images, batch_size=4, seed=0, resolution=4))
    expected = torch.nn.functional.avg_pool2d(torch.from_numpy(images).float(), 4).round()
    got = torch.cat(batches)
    # Both images come back (shuffled), each averaged over 4x4 blocks.
    assert sorted(got.float().sum(dim=(1, 2, 3)).tolist()) == sorted(expected.sum(dim=(1, 2, 3)).tolist())
    with pytest.raises(ValueError, match="cannot reduce"):
        next(iterate_reals(images, batch_size=4, seed=0, resolution=32))


def _install_loader(monkeypatch, tmp_path, meta_path=None):
    """A stand-in fastprogan.training.checkpoint.load_generator; returns the dict its calls land in."""
    G = TinyGenerator().eval()
    calls = {}

    def load_generator(path, device):
        calls["path"], calls["device"] = path, device
        meta = {"lod": 0.0, "latent_size": 8, "resolution": 32}
        if meta_path is not None:
            meta["path"] = str(meta_path)  # the file the real loader read (a run dir's newest)
        return G, meta

    # The real loader is written elsewhere; install a stand-in package for the handler's lazy import.
    training = types.ModuleType("fastprogan.training")
    training.__path__ = []
    checkpoint = types.ModuleType("fastprogan.training.checkpoint")
    checkpoint.load_generator = load_generator
    errors = types.ModuleType("fastprogan.training.errors")
    errors.CheckpointError = type("CheckpointError", (Exception,), {})
    monkeypatch.setitem(sys.modules, "fastprogan.training", training)
    monkeypatch.setitem(sys.modules, "fastprogan.training.checkpoint", checkpoint)
    monkeypatch.setitem(sys.modules, "fastprogan.training.errors", errors)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("FASTPROGAN_INCEPTION", raising=False)
    return calls


def test_cli_metrics_command(monkeypatch, tmp_path, capsys) -> None:
    calls = _install_loader(monkeypatch, tmp_path)
    data = tmp_path / "reals.npz"
    np.savez(data, images=random_reals(100, resolution=64).transpose(0, 2, 3, 1))  # NHWC, 2x the resolution
    out = tmp_path / "m.json"
    from fastprogan.cli import main

    argv = ["metrics", "--checkpoint", str(tmp_path / "ckpt.pt"), "--data", str(data), "--num-images", "48"]
    argv += ["--num-pairs", "20"]
    argv += ["--batch-size", "16", "--out", str(out), "--device", "cpu", "--seed", "3"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    # The table's FID row reports the skip; no warning repeats it.
    assert not [w for w in caught if "FID skipped" in str(w.message)]
    assert calls == {"path": str(tmp_path / "ckpt.pt"), "device": "cpu"}
    result = json.loads(out.read_text())
    assert result["resolution"] == 32 and result["num_images"] == 48
    assert set(result["swd"]) == {"32", "16", "mean"} and "swd_real_floor" in result
    assert result["msssim_pairs"] == 20 and result["fid"] is None
    captured = capsys.readouterr()
    printed = captured.out
    assert "SWD x1e3 mean" in printed and "MS-SSIM" in printed
    assert (captured.out + captured.err).count("FID skipped") == 1


def test_cli_metrics_on_a_run_dir_writes_inside_it(monkeypatch, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _install_loader(monkeypatch, tmp_path, meta_path=run / "checkpoint-000120.pt")
    data = tmp_path / "reals.npy"
    np.save(data, random_reals(40))
    from fastprogan.cli import main

    argv = ["metrics", "--checkpoint", str(run), "--data", str(data), "--metrics", "swd", "--no-floor"]
    assert main([*argv, "--num-images", "16", "--batch-size", "16", "--device", "cpu"]) == 0
    written = run / "checkpoint-000120-metrics.json"
    assert json.loads(written.read_text())["num_images"] == 16
    assert f"wrote {written}" in capsys.readouterr().out
    assert not list(tmp_path.glob("*-metrics.json"))  # nothing beside the run directory
