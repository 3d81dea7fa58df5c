"""The steps are capture-safe: no host sync and no Python branch on a tensor value inside a step.

A CUDA graph cannot contain a host read (``.item()``, ``nonzero``, ``bool(tensor)``): each is a
``_local_scalar_dense``/``nonzero``/``is_nonzero`` dispatch, so running the steps under a dispatch mode
that raises on those ops proves it without a GPU. Two paths: the CPU trainer's (impl="ref", fused
Adam checked too) and the GPU op path (impl="triton" custom ops on meta tensors: shapes only).
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastprogan.training.config import TrainingConfig
from fastprogan.training.ema import make_ema
from fastprogan.training.graphs import build_training_iteration, resolve_cuda_graphs
from fastprogan.training.networks import build_discriminator, build_generator
from fastprogan.training.precision import PrecisionPolicy, resolve_precision
from fastprogan.training.steps import make_optimizer

HOST_SYNC_OPS = {
    "aten._local_scalar_dense",  # .item(), float(t), int(t), bool(t) all end here
    "aten.item",
    "aten.is_nonzero",
    "aten.nonzero",
    "aten.nonzero_static",
    "aten.equal",
    "aten.allclose",
    "aten.masked_select",
    "aten.unique_consecutive",
    "aten._unique2",
    "aten.tolist",
}


class HostSyncError(AssertionError):
    pass


class NoHostSync(TorchDispatchMode):
    """Raises on any op that reads a tensor value on the host; counts the ops it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in HOST_SYNC_OPS:
            raise HostSyncError(f"host sync inside a step: {name}")
        self.ops += 1
        return func(*args, **(kwargs or {}))


def _iteration(device: str, impl: str, lod: float, alpha: float | None, loss: str = "wgan-gp"):
    config = TrainingConfig.from_preset(
        "quickstart", resolution=16, fmap_base=64, fmap_max=8, impl=impl, loss=loss, precision="fp32"
    )
    dev = torch.device(device)
    policy = resolve_precision("fp32", torch.device("cpu"))
    torch.manual_seed(0)
    G = build_generator(config, 3, policy.pixelnorm_eps).to(dev)
    D = build_discriminator(config, 3).to(dev)
    opts = [make_optimizer(m.parameters(), config, dev) for m in (G, D)]
    if dev.type == "meta":  # torch has no fused Adam on meta: run the optimizer outside the check
        from fastprogan.tools.dispatch import count_as_fused

        opts = [count_as_fused(o) for o in opts]
    step = build_training_iteration(
        G, D, *opts, policy, config, lod, minibatch=8, alpha=alpha, G_ema=make_ema(G), seed=1
    )
    res = G.level(lod).resolution
    reals = torch.rand(8, 3, res, res, device=dev) * 2 - 1
    return step, reals


@pytest.mark.parametrize("device,impl", [("cpu", "ref"), ("meta", "triton")])
@pytest.mark.parametrize("lod,alpha", [(1.0, None), (0.5, 0.5)], ids=["stable", "mid-fade"])
def test_training_iteration_has_no_host_sync(device, impl, lod, alpha):
    step, reals = _iteration(device, impl, lod, alpha)
    step(reals)  # first iteration: Adam state is created lazily (outside a capture in the trainer too)
    guard = NoHostSync()
    with guard:
        for _ in range(2):
            step(reals)
    assert guard.ops > 100  # the mode really saw the iteration
    if device == "cpu":
        means = step.stats.means()
        assert means.shape == (len(step.stats.names),) and torch.isfinite(means).all()


def test_lsgan_iteration_has_no_host_sync():
    step, reals = _iteration("cpu", "ref", 1.0, None, loss="lsgan")
    step(reals)
    with NoHostSync():
        step(reals)


def test_the_guard_catches_a_python_branch_on_a_tensor():
    with pytest.raises(HostSyncError, match="_local_scalar_dense|is_nonzero"), NoHostSync():
        x = torch.ones(3)
        if x.sum() > 0:  # a Python decision on a tensor value
            pass
    with pytest.raises(HostSyncError), NoHostSync():
        torch.arange(4).nonzero()


def test_fp16_grad_scaler_reads_the_host_so_auto_keeps_graphs_off():
    cuda = torch.device("cuda")
    fp16 = PrecisionPolicy("fp16", "cuda", torch.float16, True, 1e-4)
    on, why = resolve_cuda_graphs("auto", cuda, fp16)
    assert not on and "GradScaler" in why
    # ... and it really does read the host: get_scale() is a sync.
    scaler = torch.amp.GradScaler("cpu", init_scale=64.0)
    scaler.scale(torch.ones(()))  # materialises the scale tensor
    with pytest.raises(HostSyncError), NoHostSync():
        scaler.get_scale()
