"""2 processes (gloo on CPU, torch.multiprocessing) == 1 process with the same global batch.

Minibatch-stddev groups never cross ranks (each rank groups its own samples, like the official
multi-GPU code), so this comparison uses mbstd_group_size=1 (no stddev layer); everything else is the
normal path: each rank loads its share of the data (rank r takes global samples r, r+2, ...), cuts its
latents and penalty mixing factors from the shared global draw, and gradients are averaged with one
flat all-reduce. Mirroring is off because mirror coins are drawn per rank.
"""

import socket

import torch
import torch.multiprocessing as mp

from fastprogan.training.checkpoint import list_checkpoints, load_checkpoint
from fastprogan.training.distributed import DistEnv
from fastprogan.training.loop import Trainer
from tests.training.helpers import all_tensors, tiny_config

SETTINGS = dict(mbstd_group_size=1, mirror=False, total_kimg=0.256, snapshot_ticks=0, num_workers=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, run_dir: str) -> None:
    import os

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env = DistEnv(rank=rank, world_size=world, local_rank=rank)
    trainer = Trainer(run_dir, tiny_config(data, **SETTINGS), device="cpu", progress=False, env=env)
    try:
        trainer.run()
    finally:
        from fastprogan.training.distributed import shutdown

        shutdown(env)


def test_two_gloo_processes_equal_one_process(default_dataset, tmp_path):
    two = tmp_path / "two"
    mp.spawn(_worker, args=(2, _free_port(), str(default_dataset), str(two)), nprocs=2, join=True)
    one = tmp_path / "one"
    Trainer(one, tiny_config(default_dataset, **SETTINGS), progress=False).run()

    a, b = load_checkpoint(list_checkpoints(two)[-1]), load_checkpoint(list_checkpoints(one)[-1])
    assert a["progress"]["nimg"] == b["progress"]["nimg"] == 256
    assert len(a["rng"]) == 2 and len(b["rng"]) == 1
    for part in ("G", "D", "G_ema"):
        ta, tb = all_tensors(a[part]), all_tensors(b[part])
        assert ta.keys() == tb.keys()
        for name in ta:
            torch.testing.assert_close(
                ta[name], tb[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=f"{part}.{name}": f"{n}: {m}"
            )
    # The runs really trained (weights moved away from the initial ones).
    init = Trainer(tmp_path / "init", tiny_config(default_dataset, **SETTINGS), progress=False).G.state_dict()
    assert not torch.allclose(a["G"]["blocks.4x4.conv.weight"], init["blocks.4x4.conv.weight"])
