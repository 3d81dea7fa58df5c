"""The schedule equals the official formulas: values computed by hand from PROGAN_SPEC.md section 2."""

import pytest

from fastprogan.training.config import TrainingConfig
from fastprogan.training.errors import ConfigError
from fastprogan.training.schedule import schedule_at

# (preset, kimg, lod, resolution, alpha, minibatch, lr, tick_kimg)
CASES = [
    ("v2-1gpu", 0, 8.0, 4, 1.0, 128, 0.001, 160),
    ("v2-1gpu", 599.9, 8.0, 4, 1.0, 128, 0.001, 160),
    ("v2-1gpu", 600, 8.0, 4, 1.0, 128, 0.001, 160),
    ("v2-1gpu", 900, 7.5, 8, 0.5, 128, 0.001, 140),
    ("v2-1gpu", 1200, 7.0, 8, 1.0, 128, 0.001, 140),
    ("v2-1gpu", 2100, 6.5, 16, 0.5, 128, 0.001, 120),
    ("v2-1gpu", 3300, 5.5, 32, 0.5, 64, 0.001, 100),
    ("v2-1gpu", 8700, 1.0, 512, 1.0, 4, 0.001, 20),
    ("v2-1gpu", 9300, 0.5, 1024, 0.5, 4, 0.0015, 10),
    ("v2-1gpu", 9600, 0.0, 1024, 1.0, 4, 0.0015, 10),
    ("v2-1gpu", 12000, 0.0, 1024, 1.0, 4, 0.0015, 10),
    ("v2-2gpu", 0, 8.0, 4, 1.0, 256, 0.001, 160),
    ("v2-2gpu", 5700, 3.5, 128, 0.5, 16, 0.001, 60),
    ("v2-2gpu", 7500, 2.0, 256, 1.0, 8, 0.001, 40),
    ("v2-2gpu", 8100, 1.5, 512, 0.5, 8, 0.0015, 20),
    ("v2-2gpu", 9900, 0.0, 1024, 1.0, 8, 0.002, 10),
    ("v2-4gpu", 0, 8.0, 4, 1.0, 512, 0.001, 160),
    ("v2-4gpu", 900, 7.5, 8, 0.5, 256, 0.001, 140),
    ("v2-4gpu", 6900, 2.5, 256, 0.5, 16, 0.0015, 40),
    ("v2-4gpu", 8400, 1.0, 512, 1.0, 16, 0.002, 20),
    ("v2-4gpu", 10000, 0.0, 1024, 1.0, 16, 0.003, 10),
    ("v2-8gpu", 0, 8.0, 4, 1.0, 512, 0.001, 160),
    ("v2-8gpu", 4800, 4.0, 64, 1.0, 32, 0.001, 80),
    ("v2-8gpu", 5700, 3.5, 128, 0.5, 32, 0.0015, 60),
    ("v2-8gpu", 7500, 2.0, 256, 1.0, 32, 0.002, 40),
    ("v2-8gpu", 12000, 0.0, 1024, 1.0, 32, 0.003, 10),
    ("v1", 0, 8.0, 4, 1.0, 16, 0.001, 160),
    ("v1", 1200, 7.5, 8, 0.5, 16, 0.001, 140),
    ("v1", 11200, 1.0, 512, 1.0, 6, 0.001, 20),
    ("v1", 12400, 0.5, 1024, 0.5, 3, 0.001, 10),
    ("v1", 19000, 0.0, 1024, 1.0, 3, 0.001, 10),
    ("quickstart", 0, 2.0, 4, 1.0, 32, 0.001, 2),
    ("quickstart", 9, 1.5, 8, 0.5, 32, 0.001, 2),
    ("quickstart", 12, 1.0, 8, 1.0, 32, 0.001, 2),
    ("quickstart", 21, 0.5, 16, 0.5, 32, 0.001, 2),
    ("quickstart", 30, 0.0, 16, 1.0, 32, 0.001, 2),
]


@pytest.mark.parametrize(("preset", "kimg", "lod", "res", "alpha", "mb", "lr", "tick"), CASES)
def test_schedule_matches_official_formula(preset, kimg, lod, res, alpha, mb, lr, tick):
    config = TrainingConfig.from_preset(preset)
    phase = schedule_at(config, round(kimg * 1000))
    assert phase.lod == pytest.approx(lod, abs=1e-12)
    assert phase.resolution == res
    assert phase.alpha == pytest.approx(alpha, abs=1e-12)
    assert phase.minibatch == mb
    assert phase.lr == lr
    assert phase.tick_kimg == tick


def test_preset_totals_and_mbstd():
    assert TrainingConfig.from_preset("v2-1gpu").total_kimg == 12000
    v1 = TrainingConfig.from_preset("v1")
    assert (v1.total_kimg, v1.mbstd_group_size, v1.lod_training_kimg, v1.lod_transition_kimg) == (
        19000,
        16,
        800,
        800,
    )
    for name in ("v2-1gpu", "v2-2gpu", "v2-4gpu", "v2-8gpu"):
        c = TrainingConfig.from_preset(name)
        assert (c.mbstd_group_size, c.minibatch_repeats, c.d_repeats, c.mirror) == (4, 4, 1, True)
        assert (c.adam_beta1, c.adam_beta2, c.adam_eps, c.ema_beta) == (0.0, 0.99, 1e-8, 0.999)


def test_minibatch_rounded_down_to_a_multiple_of_the_gpu_count():
    config = TrainingConfig.from_preset("v2-1gpu")
    assert schedule_at(config, 0, num_gpus=3).minibatch == 126  # 128 - 128 % 3
    assert schedule_at(config, 9_600_000, num_gpus=3).minibatch == 3  # 4 - 4 % 3


def test_lod_key_changes_at_fade_start_and_end():
    config = TrainingConfig.from_preset("v2-1gpu")
    keys = [schedule_at(config, n).lod_key for n in (599_999, 600_100, 1_199_900, 1_200_000)]
    assert keys == [(8, 8), (7, 8), (7, 8), (7, 7)]


def test_unresolved_resolution_is_a_config_error():
    config = TrainingConfig.from_preset("quickstart").replace(resolution=None)
    with pytest.raises(ConfigError, match="resolution"):
        schedule_at(config, 0)
