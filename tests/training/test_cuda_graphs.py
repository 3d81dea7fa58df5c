"""Real CUDA-graph capture and replay against the eager path (needs a GPU; skipped on CPU).

Same seeds, 20 iterations, stable and mid-fade: graph replay runs the very kernels eager runs (fused
Adam in both), so the weights agree bit for bit where the kernels are deterministic and within fp32
rounding otherwise (cuDNN may pick other algorithms inside a capture). Then a run checkpointed and
resumed mid-phase with graphs on ends like the same run with graphs off.
"""

import pytest
import torch

from fastprogan.training.checkpoint import list_checkpoints, load_checkpoint
from fastprogan.training.config import TrainingConfig
from fastprogan.training.ema import make_ema
from fastprogan.training.graphs import build_training_iteration
from fastprogan.training.loop import Trainer
from fastprogan.training.networks import build_discriminator, build_generator
from fastprogan.training.precision import configure_tf32, resolve_precision
from fastprogan.training.steps import make_optimizer
from tests.training.helpers import all_tensors, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _train(cuda_graphs: bool, lod: float, alpha: float | None, iterations: int = 20):
    configure_tf32(False)
    dev = torch.device("cuda")
    config = TrainingConfig.from_preset("quickstart", resolution=16, precision="fp32")
    policy = resolve_precision("fp32", dev)
    torch.manual_seed(0)
    G = build_generator(config, 3, policy.pixelnorm_eps).to(dev)
    D = build_discriminator(config, 3).to(dev)
    G_ema = make_ema(G)
    opts = [make_optimizer(m.parameters(), config, dev, capturable=True) for m in (G, D)]
    step = build_training_iteration(
        G,
        D,
        *opts,
        policy,
        config,
        lod,
        minibatch=16,
        alpha=alpha,
        G_ema=G_ema,
        cuda_graphs=cuda_graphs,
        seed=5,
    )
    res = G.level(lod).resolution
    gen = torch.Generator(device=dev).manual_seed(9)
    for _ in range(iterations):
        step(torch.rand(16, 3, res, res, device=dev, generator=gen) * 2 - 1)
    torch.cuda.synchronize()
    return {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict()}, step


@pytest.mark.parametrize("lod,alpha", [(1.0, None), (0.5, 0.5)], ids=["stable", "mid-fade"])
def test_graph_replay_matches_eager(lod, alpha):
    eager, _ = _train(False, lod, alpha)
    graphed, step = _train(True, lod, alpha)
    assert step.runner.captures == 2
    for part in eager:
        for name, t in eager[part].items():
            torch.testing.assert_close(graphed[part][name], t, rtol=1e-5, atol=1e-6, msg=f"{part}.{name}")


def test_resume_mid_phase_graphs_on_equals_graphs_off(default_dataset, tmp_path):
    settings = dict(total_kimg=0.384, snapshot_ticks=1, num_workers=0, precision="fp32")
    off = tmp_path / "off"
    Trainer(
        off, tiny_config(default_dataset, **settings, cuda_graphs="off"), device="cuda", progress=False
    ).run()
    on = tmp_path / "on"
    Trainer(
        on, tiny_config(default_dataset, **settings, cuda_graphs="on"), device="cuda", progress=False
    ).run(stop_after_ticks=4)
    assert 0 < load_checkpoint(list_checkpoints(on)[-1])["meta"]["lod"] % 1 < 1
    Trainer(on, resume="latest", device="cuda", progress=False).run()
    a, b = load_checkpoint(list_checkpoints(on)[-1]), load_checkpoint(list_checkpoints(off)[-1])
    for part in ("G", "D", "G_ema"):
        ta, tb = all_tensors(a[part]), all_tensors(b[part])
        for name in ta:
            torch.testing.assert_close(ta[name], tb[name], rtol=1e-4, atol=1e-5, msg=f"{part}.{name}")
