"""Config round trip and overrides, EMA, the --batch auto probe, seeds and grids."""

import pytest
import torch

from fastprogan.training.batch_size import probe_batch_size
from fastprogan.training.config import TrainingConfig, parse_set_option
from fastprogan.training.ema import make_ema, update_ema
from fastprogan.training.errors import ConfigError
from fastprogan.training.images import latents_for_seeds, make_grid, parse_seeds


def test_config_json_roundtrip_keeps_int_keys():
    config = TrainingConfig.from_preset("v2-2gpu", metrics=("swd",))
    import json

    again = TrainingConfig.from_dict(json.loads(config.to_json()))
    assert again == config and again.minibatch_dict[4] == 256 and again.lr_dict[1024] == 0.002


def test_set_option_parsing():
    assert parse_set_option("total_kimg=12") == ("total_kimg", 12)
    assert parse_set_option('minibatch-dict={"4": 64}') == ("minibatch_dict", {"4": 64})
    assert parse_set_option("loss=lsgan") == ("loss", "lsgan")
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_option("total_kimg")
    config = TrainingConfig.from_preset("quickstart", minibatch_dict={"4": 64}, metrics="swd, msssim")
    assert config.minibatch_dict == {4: 64} and config.metrics == ("swd", "msssim")


def test_num_workers_defaults_to_auto_and_takes_a_count():
    assert TrainingConfig().num_workers == "auto"
    assert TrainingConfig.from_dict({"num_workers": 3}).num_workers == 3
    assert TrainingConfig.from_dict({"num_workers": "auto"}).num_workers == "auto"
    assert parse_set_option("num_workers=auto") == ("num_workers", "auto")
    assert TrainingConfig.from_dict({"num_workers": "3"}).num_workers == 3  # --num-workers 3
    for bad in (2.5, -1, True, "two"):
        with pytest.raises(ConfigError, match="num_workers must be an int >= 0 or 'auto'"):
            TrainingConfig.from_dict({"num_workers": bad})


def test_ema_is_lerp_and_copies_buffers():
    G = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        G.weight.fill_(2.0)
    ema = make_ema(G)
    with torch.no_grad():
        G.weight.fill_(3.0)
        G.running_mean.fill_(5.0)
    update_ema(ema, G, 0.9)
    torch.testing.assert_close(ema.weight, torch.full((3,), 2.1))  # lerp(3, 2, 0.9)
    assert torch.equal(ema.running_mean, torch.full((3,), 5.0))
    assert not ema.training and not ema.weight.requires_grad


def test_batch_probe_doubles_backs_off_and_keeps_80_percent():
    tried = []

    def step(b):
        tried.append(b)
        if b > 100:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate")

    assert probe_batch_size(step, start=8, multiple=4) == 48  # 64 fits, 128 does not: 0.8 * 64 = 51 -> 48
    assert tried == [8, 16, 32, 64, 128]
    assert probe_batch_size(lambda b: None, start=8, multiple=4, limit=64) == 48
    with pytest.raises(RuntimeError, match="does not fit"):
        probe_batch_size(step, start=128)

    def broken(b):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):  # only OOM counts as "does not fit"
        probe_batch_size(broken, start=8)


def test_seeds_and_latents_and_grid():
    assert parse_seeds("0-3,9") == [0, 1, 2, 3, 9]
    z = latents_for_seeds([5, 5, 6], 8)
    assert torch.equal(z[0], z[1]) and not torch.equal(z[0], z[2])
    assert torch.equal(z[0], torch.randn(8, generator=torch.Generator().manual_seed(5)))
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 2, 2)
    grid = make_grid(images, pad=0)  # 3 columns, 2 rows
    assert (
        grid.shape == (1, 4, 6)
        and grid[0, 2, 0].item() == 3
        and grid[0, 2, 2].item() == 4
        and grid[0, 3, 5].item() == 0
    )
    grid = make_grid(images)  # the default 2px of white between cells
    assert grid.shape == (1, 2 * 2 + 2, 3 * 2 + 2 * 2)
    assert grid[0, 4, 0].item() == 3 and grid[0, 4, 4].item() == 4 and grid[0, 5, 9].item() == 0
    assert (grid[0, 2:4] == 255).all() and (grid[0, :, 2:4] == 255).all()
