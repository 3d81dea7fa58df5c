"""Dispatch tables: impl='auto' follows a measured table for its device, else the roofline model.

CPU tensors never reach the CUDA branch, so the choosers (upscale_path, downscale_path) and
entries_for are called directly with a CUDA device whose name is mocked.
"""

import json
import warnings

import pytest
import torch

from fastprogan.ops import dispatch_table as dt
from fastprogan.ops.conv2d_downscale import downscale_path
from fastprogan.ops.upscale_conv2d import upscale_path

DEVICE = "NVIDIA H200"
CUDA = torch.device("cuda")
# A training shape where the roofline picks "fused" (tests/tools/test_traffic.py pins that).
UP = dict(n=32, c_in=512, c_out=256, h=32, w=32, dtype=torch.bfloat16, backward=True)
DOWN = dict(n=32, c_in=256, c_out=512, h=64, w=64, dtype=torch.bfloat16, backward=True)


def _up(**kw):
    d = {**UP, **kw}
    return upscale_path(d["n"], d["c_in"], d["c_out"], d["h"], d["w"], CUDA, d["dtype"], d["backward"])


def _down(**kw):
    d = {**DOWN, **kw}
    return downscale_path(d["n"], d["h"], d["w"], CUDA, d["c_in"], d["c_out"], d["dtype"], d["backward"])


@pytest.fixture
def on_device(monkeypatch, tmp_path):
    """A mocked CUDA device named DEVICE; tables read from tmp_path only."""
    monkeypatch.setattr(dt, "_device_name", lambda device: DEVICE)
    monkeypatch.setattr(dt, "TABLES_DIR", tmp_path / "packaged")
    monkeypatch.delenv(dt.ENV_VAR, raising=False)
    dt.clear_cache()
    yield tmp_path
    dt.clear_cache()


def _write(path, device=DEVICE, entries=None, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    table = {"format": 1, "device": device, "entries": entries or {}, **extra}
    path.write_text(json.dumps(table))
    return path


def _entries():
    return {
        "upscale_conv2d": {dt.shape_key(**UP): "ref"},
        "conv2d_downscale": {dt.shape_key(**DOWN): "ref"},
    }


def test_roofline_choice_without_a_table(on_device):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no table is not a fault: no warning
        assert dt.entries_for(DEVICE) is None
        assert _up() == "fused" and _down() == "fused"


def test_packaged_table_for_this_device_is_followed(on_device):
    _write(on_device / "packaged" / f"{dt.device_slug(DEVICE)}.json", entries=_entries())
    assert dt.entries_for(DEVICE) == _entries()
    assert _up() == "ref" and _down() == "ref"
    # A shape the table does not hold falls back to the roofline.
    assert _up(n=16) == "fused" and _down(n=16) == "fused"
    # The same shape in another dtype or direction is another key.
    assert _up(dtype=torch.float32) == "fused" and _down(backward=False) == "fused"


def test_env_override_and_off(on_device, monkeypatch):
    path = _write(on_device / "mine.json", entries=_entries())
    monkeypatch.setenv(dt.ENV_VAR, str(path))
    assert _up() == "ref"
    monkeypatch.setenv(dt.ENV_VAR, "off")
    assert dt.entries_for(DEVICE) is None and _up() == "fused"


def test_table_of_another_device_warns_and_uses_roofline(on_device, monkeypatch):
    path = _write(on_device / "a100.json", device="NVIDIA A100-SXM4-80GB", entries=_entries())
    monkeypatch.setenv(dt.ENV_VAR, str(path))
    with pytest.warns(dt.DispatchTableWarning, match="A100.*not on this device"):
        assert _up() == "fused"
    assert _down() == "fused"  # cached: still the roofline


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "unusable"),
        (json.dumps({"format": 99, "device": DEVICE, "entries": {}}), "format 99"),
        (json.dumps({"format": 1, "device": DEVICE, "entries": {"upscale_conv2d": ["ref"]}}), "entries"),
        (json.dumps([1, 2]), "JSON object"),
    ],
)
def test_corrupt_table_warns_and_uses_roofline(on_device, monkeypatch, text, match):
    path = on_device / "bad.json"
    path.write_text(text)
    monkeypatch.setenv(dt.ENV_VAR, str(path))
    with pytest.warns(dt.DispatchTableWarning, match=match):
        assert dt.entries_for(DEVICE) is None
    assert _up() == "fused"


def test_unknown_choice_in_table_warns_and_uses_roofline(on_device, monkeypatch):
    entries = {"upscale_conv2d": {dt.shape_key(**UP): "winograd"}}
    monkeypatch.setenv(dt.ENV_VAR, str(_write(on_device / "t.json", entries=entries)))
    with pytest.warns(dt.DispatchTableWarning, match="winograd"):
        assert _up() == "fused"


def test_cpu_never_reads_a_table(on_device, monkeypatch):
    monkeypatch.setenv(dt.ENV_VAR, str(_write(on_device / "t.json", entries=_entries())))
    # The CPU rule (pixels per batch) whatever the table says.
    assert upscale_path(32, 512, 256, 32, 32, torch.device("cpu"), torch.bfloat16, True) == "fused"
    assert dt.lookup("upscale_conv2d", dt.shape_key(**UP), torch.device("cpu")) is None


def test_no_cuda_build_means_no_table(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    dt.clear_cache()
    assert dt._device_name(CUDA) is None
    assert _up() == "fused"
