"""A corrupt image read by a rank other than 0 reaches the run's log (2 gloo processes on CPU).

Rank 1 writes what it finds to its own ``log-rank1.txt`` at once; with --skip-bad, rank 0 also logs
it, tagged ``rank 1:``, in ``log.txt`` at the next tick. Without --skip-bad rank 1 stops, and its
log-rank1.txt keeps the reason (rank 0 cannot hear of it).
"""

from __future__ import annotations

import shutil

import numpy as np
import torch.multiprocessing as mp

from fastprogan.data import ImageLoader, open_dataset
from fastprogan.training.loop import Trainer
from tests.training.helpers import free_port, gloo_worker_env, tiny_config

SETTINGS = dict(mbstd_group_size=1, total_kimg=0.064, snapshot_ticks=0, image_snapshot_ticks=0, num_workers=0)


def _worker(rank: int, world: int, port: int, data: str, run_dir: str, skip_bad: bool) -> None:

    from fastprogan.data.errors import CorruptImageError
    from fastprogan.training.distributed import shutdown

    env = gloo_worker_env(rank, world, port)
    config = tiny_config(data, skip_bad=skip_bad, **SETTINGS)
    trainer = Trainer(run_dir, config, device="cpu", progress=False, env=env)
    try:
        trainer.run()
    except CorruptImageError:
        if skip_bad or rank != 1:
            raise
    except RuntimeError:  # rank 0 of the stopping run: its peer went away during a collective
        if skip_bad or rank != 0:
            raise
    finally:
        shutdown(env)


def _corrupt_one_image_of_rank_1(source, target) -> int:
    """A copy of the dataset with one image of rank 1's first 4x4 batch flipped; returns its index."""
    shutil.copytree(source, target)
    config = tiny_config(target, **SETTINGS)
    ds = open_dataset(target)
    per_rank = config.minibatch_base // 2
    first = ImageLoader(ds, 4, per_rank, seed=config.seed, rank=1, world_size=2, verify=False)
    index = int(first._next_indices(0, 0)[0][0])
    file = target / "res_0004.npy"
    image_bytes = ds.channels * 16
    data_start = file.stat().st_size - ds.num_images * image_bytes
    with open(file, "r+b") as f:
        f.seek(data_start + index * image_bytes + 3)
        byte = f.read(1)
        f.seek(data_start + index * image_bytes + 3)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not np.array_equal(open_dataset(target).images(4)[index], open_dataset(source).images(4)[index])
    return index


def test_rank_1_corrupt_image_reaches_the_run_log(default_dataset, tmp_path):
    data = tmp_path / "data"
    index = _corrupt_one_image_of_rank_1(default_dataset, data)

    skip = tmp_path / "skip"
    mp.spawn(_worker, args=(2, free_port(), str(data), str(skip), True), nprocs=2, join=True)
    found = f"skipped corrupt image {index} of {data / 'res_0004.npy'}"
    rank_log = (skip / "log-rank1.txt").read_text()
    assert found in rank_log
    log = (skip / "log.txt").read_text()
    assert f"rank 1: {found}" in log  # gathered at the tick, tagged with the rank
    assert log.count(found) == 1  # once, not also as a rank-0 line
    assert not (skip / "log-rank0.txt").exists()

    stop = tmp_path / "stop"
    mp.spawn(_worker, args=(2, free_port(), str(data), str(stop), False), nprocs=2, join=True)
    rank_log = (stop / "log-rank1.txt").read_text()
    assert f"rank 1 stopped: {data / 'res_0004.npy'}: image {index} does not match its xxh3_64" in rank_log


def test_rank_log_survives_an_unwritable_run_dir(tmp_path, capsys):
    from fastprogan.training.feedback import RankLog

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    log = RankLog(blocker / "run", 3)  # its run directory cannot exist
    log.log("skipped corrupt image 5 of ds/res_0004.npy")
    assert "skipped corrupt image 5" in capsys.readouterr().err  # said on stderr, training goes on
    assert log.take() == ["skipped corrupt image 5 of ds/res_0004.npy"]  # still handed to rank 0
    assert log.take() == []
    ok = RankLog(tmp_path / "run", 1)
    ok.log("a")
    ok.log("b")
    assert (tmp_path / "run" / "log-rank1.txt").read_text() == "a\nb\n"
