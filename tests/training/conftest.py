"""Shared fixtures: a small real dataset (the embedded default one), narrow training configs."""

from __future__ import annotations

import pytest
import torch

# The tests' networks are tiny: one intra-op thread is faster than two, and far faster when other
# jobs share the CPU (spinning OpenMP threads then wait on descheduled peers).
torch.set_num_threads(1)


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
