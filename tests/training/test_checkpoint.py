"""Checkpoint files: atomic writes, keep-K, RNG round trip, and refusal of code-running pickles."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from fastprogan.training import checkpoint as ckpt
from fastprogan.training.errors import CheckpointError, NonFiniteError


def _state(value: float = 1.0) -> dict:
    return {
        "G": {"w": torch.full((3,), value)},
        "D": {"w": torch.zeros(2)},
        "G_ema": {"w": torch.ones(3)},
        "progress": {"nimg": 5},
    }


def test_save_load_roundtrip_and_keep(tmp_path):
    for nimg in (100, 200, 300, 400):
        path = ckpt.save_checkpoint(_state(nimg), tmp_path, nimg, keep=2)
    assert path.name == "checkpoint-000000400.pt"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "checkpoint-000000300.pt",
        "checkpoint-000000400.pt",
    ]
    state = ckpt.load_checkpoint(ckpt.resolve_resume("latest", tmp_path))
    assert torch.equal(state["G"]["w"], torch.full((3,), 400.0))
    assert state["progress"] == {"nimg": 5}


def test_killed_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    good = ckpt.save_checkpoint(_state(1.0), tmp_path, 1000, keep=3)

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes of a zip")  # what a killed writer leaves behind
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(_state(2.0), tmp_path, 2000, keep=3)
    monkeypatch.undo()
    assert ckpt.resolve_resume("latest", tmp_path) == good
    assert torch.equal(ckpt.load_checkpoint(good)["G"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]  # no temporary left


def test_sigkill_leftover_temporary_is_ignored_and_cleaned(tmp_path):
    good = ckpt.save_checkpoint(_state(), tmp_path, 1000, keep=3)
    leftover = tmp_path / ".checkpoint-000002000.pt.tmp-12345"
    leftover.write_bytes(b"truncated")
    assert ckpt.resolve_resume("latest", tmp_path) == good
    ckpt.remove_stale_temporaries(tmp_path)
    assert not leftover.exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = ckpt.save_checkpoint(_state(), tmp_path, 1000, keep=3)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=path.name):
        ckpt.load_checkpoint(path)


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_checkpoint_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "checkpoint-000000001.pt"
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION, "G": _RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match=str(evil).replace("\\", "\\\\")):
        ckpt.load_checkpoint(evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        ckpt.load_generator(evil)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # control: the file really runs code when trusted
    assert marker.exists()


def test_non_finite_weights_are_never_written(tmp_path):
    state = _state()
    state["G_ema"]["w"][1] = float("nan")
    with pytest.raises(NonFiniteError, match="G_ema weight w"):
        ckpt.save_checkpoint(state, tmp_path, 1000, keep=3)
    assert ckpt.list_checkpoints(tmp_path) == []


def test_rng_state_roundtrip(tmp_path):
    """Every RNG the trainer may touch, the legacy global numpy one included, comes back exactly."""
    gen = torch.Generator().manual_seed(3)
    legacy_np = np.random  # the global state is what the checkpoint must save

    def draw():
        return torch.rand(3), legacy_np.rand(3), random.random(), torch.rand(3, generator=gen)

    torch.manual_seed(1)
    legacy_np.seed(2)
    random.seed(3)
    state = ckpt.capture_rng_state({"latents": gen})
    expected = draw()
    ckpt.save_checkpoint({**_state(), "rng": [state]}, tmp_path, 1, keep=1)
    loaded = ckpt.load_checkpoint(ckpt.resolve_resume("latest", tmp_path))
    torch.manual_seed(9)
    legacy_np.seed(9)
    random.seed(9)
    gen.manual_seed(9)
    ckpt.restore_rng_state(loaded["rng"][0], {"latents": gen})
    got = draw()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])


def test_resume_missing_paths_name_the_thing(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ckpt.resolve_resume("latest", tmp_path)
    with pytest.raises(CheckpointError, match="nope.pt"):
        ckpt.resolve_resume(str(tmp_path / "nope.pt"), tmp_path)


class _DeviceGeneratorStandIn:
    """What the trainer's shared generator is on a CUDA run, as far as restore_rng_state looks at it
    (no CUDA here): device type cuda, a 16-byte Philox state, manual_seed."""

    def __init__(self) -> None:
        self.device = torch.device("cuda")
        self.seeds: list[int] = []
        self.set_states = 0

    def get_state(self) -> torch.Tensor:
        return torch.zeros(16, dtype=torch.uint8)

    def set_state(self, state: torch.Tensor) -> None:
        self.set_states += 1
        raise RuntimeError("a CUDA generator cannot take this state")

    def manual_seed(self, seed: int) -> "_DeviceGeneratorStandIn":
        self.seeds.append(seed)
        return self


def _pre_device_draw_state() -> dict:
    """A checkpoint's ``rng`` as builds before the device-side draws wrote it: CPU generator states,
    no ``generator_devices`` entry."""
    shared, mirror = torch.Generator().manual_seed(11), torch.Generator().manual_seed(12)
    torch.rand(5, generator=shared)  # mid-stream
    state = ckpt.capture_rng_state({"shared": shared, "mirror": mirror})
    del state["generator_devices"]
    return state


def test_old_checkpoint_on_a_device_generator_is_reseeded_with_one_warning():
    state = _pre_device_draw_state()
    mirror = torch.Generator().manual_seed(0)
    expected_mirror = torch.Generator()
    expected_mirror.set_state(state["generators"]["mirror"])
    shared = _DeviceGeneratorStandIn()
    warnings = ckpt.restore_rng_state(state, {"shared": shared, "mirror": mirror}, "run/checkpoint-7.pt")
    # the CPU-side generator of the same kind continues exactly
    assert torch.equal(torch.rand(4, generator=mirror), torch.rand(4, generator=expected_mirror))
    # the device generator is never handed the CPU state; it is seeded from it, deterministically
    assert shared.set_states == 0
    assert shared.seeds == [ckpt.reseed_from_state(state["generators"]["shared"])]
    assert len(warnings) == 1
    line = warnings[0]
    assert "run/checkpoint-7.pt" in line and "'shared'" in line and "cpu generator" in line
    assert "not bit-identical" in line and "\n" not in line
    again = _DeviceGeneratorStandIn()
    ckpt.restore_rng_state(_pre_device_draw_state(), {"shared": again, "mirror": mirror})
    assert again.seeds == shared.seeds  # the same checkpoint, the same continuation


def test_device_state_on_a_cpu_generator_is_reseeded_and_reproducible():
    state = _pre_device_draw_state()
    philox = torch.arange(16, dtype=torch.uint8)  # what a CUDA run saves for its shared generator
    state["generators"]["shared"] = philox
    state["generator_devices"] = {"shared": "cuda", "mirror": "cpu"}
    draws = []
    for _ in range(2):
        shared, mirror = torch.Generator(), torch.Generator()
        (warning,) = ckpt.restore_rng_state(state, {"shared": shared, "mirror": mirror}, "ckpt.pt")
        draws.append(torch.randn(6, generator=shared))
    assert "cuda generator" in warning and "this run draws it on cpu" in warning
    assert torch.equal(draws[0], draws[1])
    assert torch.equal(
        draws[0], torch.randn(6, generator=torch.Generator().manual_seed(ckpt.reseed_from_state(philox)))
    )


def test_same_kind_restores_exactly_without_warnings_and_missing_generator_is_an_error():
    state = _pre_device_draw_state()  # no generator_devices: the kind comes from the state's size
    shared = torch.Generator()
    assert ckpt.restore_rng_state(state, {"shared": shared, "mirror": torch.Generator()}) == []
    reference = torch.Generator()
    reference.set_state(state["generators"]["shared"])
    assert torch.equal(torch.rand(3, generator=shared), torch.rand(3, generator=reference))
    with pytest.raises(CheckpointError, match=r"ckpt\.pt: no saved state for the RNG generator\(s\) extra"):
        ckpt.restore_rng_state(state, {"extra": torch.Generator()}, "ckpt.pt")
