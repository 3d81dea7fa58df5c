"""Shared fixtures: a small real dataset (the embedded default one), narrow training configs."""

from __future__ import annotations

import pytest

from tests.training.helpers import ensure_data_package

ensure_data_package()


@pytest.fixture(scope="session")
def default_dataset(tmp_path_factory):
    """The embedded default dataset (real images shipped in the package), built once per session."""
    from fastprogan.data import materialize_default_dataset

    return materialize_default_dataset(tmp_path_factory.mktemp("default-dataset"))


@pytest.fixture(scope="session")
def finished_run(default_dataset, tmp_path_factory):
    """An uninterrupted tiny run through the CLI (used by the end-to-end and resume tests)."""
    from fastprogan.cli import main
    from tests.training.helpers import tiny_cli_args

    run = tmp_path_factory.mktemp("e2e") / "run"
    assert main(["train", "--out", str(run), *tiny_cli_args(default_dataset)]) == 0
    return run
