"""``fastprogan dataset create|info|verify`` through fastprogan.cli.main: return codes and messages."""

from __future__ import annotations

import numpy as np

from fastprogan.cli import main


def test_create_info_verify(tmp_path, write_images, capsys):
    write_images(tmp_path / "src", 5, size=(16, 16))
    out = tmp_path / "ds"
    rc = main(["dataset", "create", str(tmp_path / "src"), str(out), "--resolution", "16", "--no-progress"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["dataset", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "images:      5" in text and "resolutions: 4, 8, 16" in text and "channels:    3" in text
    assert main(["dataset", "verify", str(out), "--deep"]) == 0
    assert "ok:" in capsys.readouterr().out


def test_create_options_reach_the_builder(tmp_path, write_images, capsys):
    write_images(tmp_path / "src", 6, size=(24, 16))
    out = tmp_path / "ds"
    args = ["dataset", "create", str(tmp_path / "src"), str(out), "--resolution", "8", "--channels", "1"]
    args += ["--max-images", "4", "--transform", "center-crop", "--seed", "3", "--workers", "1"]
    assert main([*args, "--no-progress"]) == 0
    from fastprogan.data import open_dataset

    ds = open_dataset(out)
    assert (ds.num_images, ds.channels, ds.manifest["options"]["seed"]) == (4, 1, 3)


def test_bad_file_exits_2_naming_it_without_traceback(tmp_path, write_images, capsys):
    write_images(tmp_path / "src", 2, size=(16, 16))
    (tmp_path / "src" / "bad.png").write_bytes(b"definitely not a png")
    rc = main(["dataset", "create", str(tmp_path / "src"), str(tmp_path / "ds"), "--resolution", "16"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "error: bad.png: not an image file" in err and "Traceback" not in err
    assert not (tmp_path / "ds").exists()
    args = ["dataset", "create", str(tmp_path / "src"), str(tmp_path / "ds"), "--resolution", "16"]
    rc = main([*args, "--skip-bad", "--no-progress"])
    assert rc == 0 and "skipped: bad.png" in capsys.readouterr().out


def test_existing_out_exits_2(tmp_path, write_images, capsys):
    write_images(tmp_path / "src", 2, size=(8, 8))
    args = ["dataset", "create", str(tmp_path / "src"), str(tmp_path / "ds"), "--resolution", "8"]
    assert main([*args, "--no-progress"]) == 0
    assert main([*args, "--no-progress"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--no-progress", "--overwrite"]) == 0


def test_verify_flipped_byte_exits_2_naming_the_file(tmp_path, write_images, capsys):
    write_images(tmp_path / "src", 3, size=(8, 8))
    out = tmp_path / "ds"
    assert (
        main(["dataset", "create", str(tmp_path / "src"), str(out), "--resolution", "8", "--no-progress"])
        == 0
    )
    level = out / "res_0008.npy"
    data = np.load(level)
    data[1, 0, 3, 3] ^= 0x80
    np.save(level, data)
    capsys.readouterr()
    assert main(["dataset", "verify", str(out)]) == 2
    err = capsys.readouterr().err
    assert "res_0008.npy" in err and "verify failed" in err


def test_info_and_verify_on_a_non_dataset(tmp_path, capsys):
    assert main(["dataset", "info", str(tmp_path)]) == 2
    assert "manifest.json: missing" in capsys.readouterr().err
    assert main(["dataset", "verify", str(tmp_path / "nope")]) == 2
    assert "not a finished fastprogan dataset" in capsys.readouterr().err


def test_dataset_without_subcommand_prints_help(capsys):
    assert main(["dataset"]) == 2
    assert "create" in capsys.readouterr().out


def test_bad_resolution_exits_2_with_a_message(tmp_path, write_images, capsys):
    write_images(tmp_path / "src", 1, size=(8, 8))
    assert main(["dataset", "create", str(tmp_path / "src"), str(tmp_path / "ds"), "--resolution", "24"]) == 2
    err = capsys.readouterr().err
    assert "power of two" in err and "Traceback" not in err


def test_create_draws_no_bar_when_stderr_is_not_a_terminal(tmp_path, write_images, capsys, monkeypatch):
    write_images(tmp_path / "src", 3, size=(8, 8))
    args = ["dataset", "create", str(tmp_path / "src"), str(tmp_path / "ds"), "--resolution", "8"]
    assert main(args) == 0  # capsys: stderr is not a terminal
    assert "decoding" not in capsys.readouterr().err
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert main([*args[:3], str(tmp_path / "ds2"), *args[4:]]) == 0
    assert "decoding" in capsys.readouterr().err  # on a terminal the bar is drawn
