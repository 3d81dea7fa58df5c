"""Data parallelism under torchrun (env RANK, WORLD_SIZE, LOCAL_RANK; nccl on GPUs, gloo on CPU).

Why not DistributedDataParallel: a WGAN-GP D step runs D three times (reals, fakes, xhat: three
separate forwards, so each keeps its own minibatch-stddev groups) and differentiates the xhat pass
twice (``torch.autograd.grad(create_graph=True)``, then ``backward``). DDP's reducer expects one
forward per backward and fires its all-reduce hooks from autograd; the documentation lists double
backward / ``autograd.grad`` as unsupported, and with three forwards it either errors ("Expected to mark
a variable ready only once") or needs static-graph tricks that break when the network grows. So each
rank computes its local loss and gradients as a single-process run would, and then
:func:`average_gradients` averages all gradients across ranks with ONE flattened all-reduce. With equal
per-rank batches the averaged gradient is exactly the gradient of the global-batch mean loss, penalty
included (the penalty is a per-sample term). Parameters start identical (same seed + a broadcast from
rank 0) and every rank applies the same averaged gradient, so they stay identical.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_from_torchrun() -> DistEnv:
    """RANK / WORLD_SIZE / LOCAL_RANK as set by torchrun (a single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    return DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))


def device_for(env: DistEnv, requested: str | None = None) -> torch.device:
    """The device this rank trains on: ``requested``, else cuda:LOCAL_RANK when CUDA exists, else CPU."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", env.local_rank)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def init_process_group(env: DistEnv, device: torch.device) -> None:
    """Join the torchrun job (no-op for one process): nccl for CUDA devices, gloo otherwise."""
    if not env.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        rank=env.rank,
        world_size=env.world_size,
        device_id=device if device.type == "cuda" else None,
    )


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(module: nn.Module, env: DistEnv) -> None:
    """Make every rank's parameters and buffers equal to rank 0's."""
    if not env.enabled:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t, src=0)


def average_gradients(module: nn.Module, env: DistEnv) -> None:
    """Average ``.grad`` of every parameter that has one across ranks: one flat all-reduce.

    All ranks train the same level of detail, so the set of parameters with gradients is the same on
    every rank and the flattened buffers line up.
    """
    if not env.enabled:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # [sum of numels]
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(env.world_size)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def all_reduce_mean(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The mean of a tensor over ranks (for logged losses)."""
    if not env.enabled:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / env.world_size


def all_reduce_max(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The elementwise maximum of a tensor over ranks (e.g. "did any rank get SIGTERM")."""
    if not env.enabled:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj`` (e.g. RNG states), in rank order, on every rank."""
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()
