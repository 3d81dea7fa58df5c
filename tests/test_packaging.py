"""A plain, non-editable `pip install .` into a fresh virtual environment works."""

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_cli_version_and_help_in_process(capsys):
    from fastprogan import __version__
    from fastprogan.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "usage: fastprogan" in capsys.readouterr().out


def test_non_editable_install_into_fresh_venv(tmp_path):
    # Copy the sources so the build never writes into the checkout (build/, *.egg-info).
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns(".git", ".venv", "runs", "*.egg-info", "build", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, src, ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONNOUSERSITE": "1"}
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    wheel = next((tmp_path / "dist").glob("fastprogan-*.whl"))
    subprocess.run(
        [*pip, "--python", py, "install", "-q", "--no-deps", wheel], check=True, env=env, cwd=tmp_path
    )
    shutil.rmtree(src)  # prove the installed copy stands alone
    # torch/numpy come from this interpreter's site-packages through PYTHONPATH (no .pth files run there,
    # so an editable install of fastprogan in it cannot shadow the fresh one).
    env["PYTHONPATH"] = os.pathsep.join(site.getsitepackages())
    out = subprocess.run(
        [
            py,
            "-c",
            "import fastprogan, fastprogan.kernels, fastprogan.nn, fastprogan.models; "
            "from fastprogan.data import default_dataset_source as d; "
            "print(fastprogan.__file__, fastprogan.kernels.__file__, d(), d().with_name('LICENSE.md'))",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    ).stdout.split()
    assert len(out) == 4 and all(path.startswith(str(env_dir)) for path in out), out
    assert out[1].endswith("site-packages/fastprogan/kernels/__init__.py")
    # the embedded default dataset and its attribution ship inside the wheel
    assert Path(out[2]).is_file() and Path(out[2]).stat().st_size > 100_000 and Path(out[3]).is_file()
    cli = subprocess.run(
        [env_dir / "bin" / "fastprogan", "--version"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    ).stdout
    assert cli.startswith("fastprogan ")
