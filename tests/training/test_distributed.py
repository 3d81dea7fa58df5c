"""2 processes (gloo on CPU, torch.multiprocessing) == 1 process with the same global batch, and a
2-process run resumed on 1 process continues the same sequence.

Minibatch-stddev groups never cross ranks (each rank groups its own samples, like the official
multi-GPU code), so this comparison uses mbstd_group_size=1 (no stddev layer); everything else is the
normal path: each rank loads its slice of the global batch (rank r takes global samples r, r+2, ...),
cuts its latents, penalty mixing factors and mirror coins from the global draws, and gradients are
averaged with one flat all-reduce.
"""

import torch
import torch.multiprocessing as mp

from fastprogan.training.checkpoint import checkpoint_name, list_checkpoints, load_checkpoint
from fastprogan.training.loop import Trainer
from tests.training.helpers import all_tensors, free_port, gloo_worker_env, tiny_config

SETTINGS = dict(mbstd_group_size=1, mirror=True, total_kimg=0.256, snapshot_ticks=1, num_workers=0)


def _worker(rank: int, world: int, port: int, data: str, run_dir: str, ticks: int) -> None:
    env = gloo_worker_env(rank, world, port)
    trainer = Trainer(run_dir, tiny_config(data, **SETTINGS), device="cpu", progress=False, env=env)
    try:
        trainer.run(stop_after_ticks=ticks)
    finally:
        from fastprogan.training.distributed import shutdown

        shutdown(env)


def _assert_same_training(a: dict, b: dict) -> None:
    for part in ("G", "D", "G_ema", "opt_G", "opt_D"):
        ta, tb = all_tensors(a[part]), all_tensors(b[part])
        assert ta.keys() == tb.keys(), part
        for name in ta:
            torch.testing.assert_close(
                ta[name], tb[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=f"{part}.{name}": f"{n}: {m}"
            )
    # The global streams are at the same point: data order, latents/u and mirror coins.
    assert a["loader"] == b["loader"]
    for name in ("shared", "mirror"):
        assert torch.equal(a["rng"]["generators"][name], b["rng"]["generators"][name]), name


def test_two_gloo_processes_equal_one_process_and_resume_on_one(default_dataset, tmp_path):
    two = tmp_path / "two"
    # 2 ticks (128 images: the end of the 4x4 stable phase), then "preempted".
    mp.spawn(_worker, args=(2, free_port(), str(default_dataset), str(two), 2), nprocs=2, join=True)
    one = tmp_path / "one"
    Trainer(one, tiny_config(default_dataset, **SETTINGS), progress=False).run()  # uninterrupted

    at_128 = checkpoint_name(128)
    a, b = load_checkpoint(two / at_128), load_checkpoint(one / at_128)
    assert isinstance(a["rng"], dict)  # stored once for the job, not per rank
    _assert_same_training(a, b)

    # Resume the 2-process run on ONE process: through the fade to 8x8, with mirroring.
    Trainer(two, resume="latest", progress=False).run()
    a, b = load_checkpoint(list_checkpoints(two)[-1]), load_checkpoint(list_checkpoints(one)[-1])
    assert a["progress"]["nimg"] == b["progress"]["nimg"] == 256
    _assert_same_training(a, b)
    assert "resumed from" in (two / "log.txt").read_text()
    # The runs really trained (weights moved away from the initial ones).
    init = Trainer(tmp_path / "init", tiny_config(default_dataset, **SETTINGS), progress=False).G.state_dict()
    assert not torch.allclose(a["G"]["blocks.4x4.conv.weight"], init["blocks.4x4.conv.weight"])
