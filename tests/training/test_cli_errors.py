"""Bad settings: one clear line naming the thing, exit status 2, no traceback."""

import subprocess
import sys

import pytest

from fastprogan.cli import main
from tests.training.helpers import tiny_cli_args


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--preset", "v3-16gpu"], "unknown preset 'v3-16gpu'"),
        (["--resolution", "24"], "resolution must be a power of two >= 4, got 24"),
        (["--precision", "fp8"], "precision must be one of"),
        (["--set", "loss=hinge"], "loss must be one of"),
        (["--set", "nonsense=1"], "unknown config field 'nonsense'"),
        (["--set", "fmap_base=big"], "config field fmap_base must be int"),
        (["--batch", "huge"], "batch must be 'preset' or 'auto'"),
        (["--metrics", "swd,iq"], "unknown metric(s) iq"),
        (["--num-workers", "many"], "config field num_workers must be an int >= 0 or 'auto', got 'many'"),
        (["--set", "num_workers=-3"], "config field num_workers must be an int >= 0 or 'auto', got -3"),
    ],
)
def test_bad_settings_exit_2(extra, needle, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_dataset_smaller_than_config(default_dataset, tmp_path, capsys):
    rc = main(
        ["train", "--out", str(tmp_path / "run"), *tiny_cli_args(default_dataset), "--resolution", "64"]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "smaller than the config's resolution 64px" in err and str(default_dataset) in err


def test_missing_dataset_and_resume_paths(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "nowhere")]) == 2
    assert f"dataset {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", str(tmp_path / "gone.pt")]) == 2
    assert "gone.pt: no such checkpoint file" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "empty"), "--resume", "latest"]) == 2
    assert "no checkpoint-*.pt" in capsys.readouterr().err


def test_generate_errors(tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "x.pt"), "--out", str(tmp_path)]) == 2
    assert "x.pt" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", "x.pt", "--seeds", "9-3", "--out", str(tmp_path)]) == 2
    assert "bad seed range '9-3'" in capsys.readouterr().err


def test_python_dash_m_entry_point_exit_code(tmp_path):
    """`python -m fastprogan train` with a bad preset: status 2, one line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "fastprogan", "train", "--preset", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown preset 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_print_config_shows_preset_and_overrides(capsys):
    assert main(["train", "--preset", "v2-8gpu", "--lr", "0.002", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert '"lr_base": 0.002' in out and '"minibatch_base": 32' in out and '"preset": "v2-8gpu"' in out
