"""Helpers shared by the training tests."""

from __future__ import annotations

from fastprogan.training.config import TrainingConfig


def tiny_config(data, **overrides) -> TrainingConfig:
    """A narrow 16px network and a schedule with both a fade and a stable phase in ~1-2 kimg."""
    values = dict(
        data=str(data),
        resolution=16,
        fmap_base=64,
        fmap_max=16,
        mbstd_group_size=4,
        minibatch_base=16,
        minibatch_dict={},
        lod_training_kimg=0.128,
        lod_transition_kimg=0.192,
        total_kimg=0.768,
        tick_kimg_base=0.064,
        tick_kimg_dict={},
        snapshot_ticks=2,
        image_snapshot_ticks=1,
        grid_images=16,
        num_workers=0,
        mirror=True,
        seed=3,
        precision="fp32",  # explicit: "auto" picks bf16 on CPUs with native bf16, and tests compare numerics
    )
    values.update(overrides)
    return TrainingConfig.from_preset("quickstart", **values)


def tiny_cli_args(data, **overrides) -> list[str]:
    """The same settings as :func:`tiny_config`, as ``fastprogan train`` arguments."""
    import json

    config = tiny_config(data, **overrides)
    defaults = TrainingConfig.from_preset("quickstart").to_dict()
    args = ["--preset", "quickstart", "--no-progress"]
    for key, value in config.to_dict().items():
        if value != defaults[key]:
            args += ["--set", f"{key}={json.dumps(value)}"]
    return args


def all_tensors(state: dict, prefix: str = "") -> dict:
    """Every tensor in a nested checkpoint dict, by dotted path."""
    import torch

    out = {}
    for k, v in state.items():
        name = f"{prefix}{k}"
        if torch.is_tensor(v):
            out[name] = v
        elif isinstance(v, dict):
            out.update(all_tensors(v, name + "."))
        elif isinstance(v, (list, tuple)):
            out.update(all_tensors(dict(enumerate(v)), name + "."))
    return out


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the rendezvous of a spawned 2-process gloo test)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo_worker_env(rank: int, world: int, port: int):
    """In a worker started by ``torch.multiprocessing.spawn``: one intra-op thread, the rendezvous
    address, and this rank's DistEnv (the Trainer joins the gloo group on CPU)."""
    import os

    import torch

    from fastprogan.training.distributed import DistEnv

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return DistEnv(rank=rank, world_size=world, local_rank=rank)
