"""The CUDA-graph path of the trainer, driven on CPU with the capture API replaced by a fake.

The fake records the captured step without running it (as a real capture records kernels without
executing them) and re-runs the recorded Python on every replay. So a run with the fake gives the eager
run's numbers only if every input really flows through the static buffers (reals copied in, the fade
weight written into its tensor, latents drawn inside the step) and the warm-up/capture/replay order is
right. Checked: weights equal bit for bit to an eager run; warm-up steps, one D and one G capture per
phase, re-capture after the phase change (Adam reset) and after resuming mid-phase.
"""

import contextlib
import typing

import pytest
import torch

from fastprogan.training import graphs, loop
from fastprogan.training.checkpoint import list_checkpoints, load_checkpoint
from fastprogan.training.loop import Trainer
from tests.training.helpers import all_tensors, tiny_config


class FakeGraph:
    def __init__(self, log):
        self.fn, self.log = None, log

    def replay(self):
        self.log.append("replay")
        self.fn()


class FakeBackend:
    """Capture records the function; replay runs it; warm-up runs inline."""

    log: typing.ClassVar[list[str]] = []

    def new_graph(self):
        return FakeGraph(self.log)

    def capture(self, graph, fn, generator):
        assert graph.fn is None, "a graph is captured once"
        assert generator is not None
        graph.fn = fn
        self.log.append("capture")

    def replay(self, graph):
        graph.replay()

    @contextlib.contextmanager
    def warmup_stream(self, device):
        self.log.append("warmup")
        yield


@pytest.fixture
def fake_graphs(monkeypatch):
    FakeBackend.log = []
    monkeypatch.setattr(graphs, "CudaGraphBackend", FakeBackend)
    monkeypatch.setattr(
        loop, "resolve_cuda_graphs", lambda mode, *a: (mode != "off", f"CUDA graphs {mode} (fake)")
    )
    return FakeBackend.log


# 4x4 stable (2 rounds), fade 4->8 (3 rounds), 8x8 stable (1 round); 4 D + 4 G steps per round.
SETTINGS = dict(total_kimg=0.384, snapshot_ticks=1, lod_training_kimg=0.128, lod_transition_kimg=0.192)


def _final(run_dir):
    return load_checkpoint(list_checkpoints(run_dir)[-1])


def _assert_same_training(a, b):
    for part in ("G", "D", "G_ema", "opt_G", "opt_D"):
        ta, tb = all_tensors(a[part]), all_tensors(b[part])
        assert ta.keys() == tb.keys(), part
        for name in ta:
            assert torch.equal(ta[name], tb[name]), f"{part}.{name} differs between graphs and eager"
    # The shared generator advanced exactly as in the eager run (the draws happen inside the steps).
    ga, gb = a["rng"]["generators"], b["rng"]["generators"]
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)


def test_graph_path_equals_eager_and_captures_once_per_phase(default_dataset, tmp_path, fake_graphs):
    eager = Trainer(
        tmp_path / "eager", tiny_config(default_dataset, **SETTINGS, cuda_graphs="off"), progress=False
    )
    eager.run()
    graphed = Trainer(tmp_path / "graphs", tiny_config(default_dataset, **SETTINGS), progress=False)
    graphed.run()
    _assert_same_training(_final(tmp_path / "graphs"), _final(tmp_path / "eager"))

    log = fake_graphs
    # 3 phases x (3 warm-up D + 3 warm-up G steps, then one D and one G capture).
    assert log.count("capture") == 6
    assert log.count("warmup") == 3 * 6
    steps = 384 // 16 * 2  # D steps + G steps
    assert log.count("replay") == steps - log.count("warmup")
    # Per phase: warm-up first, then capture, then only replays until the next phase.
    first_capture = log.index("capture")
    assert set(log[:first_capture]) == {"warmup"} and log[first_capture + 1] == "replay"
    assert "graphs auto (fake)" in (tmp_path / "graphs" / "log.txt").read_text()


def test_resume_mid_phase_recaptures_and_matches_eager(default_dataset, tmp_path, fake_graphs):
    reference = Trainer(
        tmp_path / "ref", tiny_config(default_dataset, **SETTINGS, cuda_graphs="off"), progress=False
    )
    reference.run()
    run = tmp_path / "run"
    Trainer(run, tiny_config(default_dataset, **SETTINGS), progress=False).run(stop_after_ticks=4)
    state = load_checkpoint(list_checkpoints(run)[-1])
    assert 0 < state["meta"]["lod"] % 1 < 1  # interrupted mid-fade
    captures_before = fake_graphs.count("capture")
    resumed = Trainer(run, resume="latest", progress=False)
    resumed.run()
    # The resumed trainer warms up and captures again (the fade phase, then 8x8).
    assert fake_graphs.count("capture") - captures_before == 4
    _assert_same_training(_final(run), _final(tmp_path / "ref"))


def test_runner_recaptures_when_the_learning_rate_changes(fake_graphs):
    from fastprogan.training.config import TrainingConfig
    from fastprogan.training.networks import build_discriminator, build_generator
    from fastprogan.training.precision import resolve_precision
    from fastprogan.training.steps import make_optimizer

    config = TrainingConfig.from_preset("quickstart", resolution=8, fmap_base=32, fmap_max=4)
    cpu = torch.device("cpu")
    policy = resolve_precision("fp32", cpu)
    G, D = build_generator(config, 1, 1e-8), build_discriminator(config, 1)
    opt_G, opt_D = (make_optimizer(m.parameters(), config, cpu) for m in (G, D))
    step = graphs.build_training_iteration(
        G, D, opt_G, opt_D, policy, config, 0.0, minibatch=4, cuda_graphs=False, warmup=1
    )
    runner = step.runner
    runner.use_graphs, runner.backend = True, FakeBackend()  # as cuda_graphs=True would, on CPU
    reals = torch.zeros(4, 1, 8, 8)
    for _ in range(3):
        step(reals)
    assert runner.captures == 2
    for group in opt_D.param_groups:
        group["lr"] = 0.5
    step(reals)
    assert runner.captures == 3  # D re-captured with the new rate, G kept
    # Each batch is copied into the one static buffer the captured steps read.
    buffer = runner.static_reals.data_ptr()
    new_reals = torch.rand(4, 1, 8, 8)
    runner.d_step(new_reals)
    assert torch.equal(runner.static_reals, new_reals) and runner.static_reals.data_ptr() == buffer
    runner.g_step()
    with pytest.raises(ValueError, match="do not match this phase's buffer"):
        runner.d_step(torch.zeros(2, 1, 8, 8))
    assert step.stats.d_count == 5 and step.stats.g_count == 5


def test_cuda_graphs_setting_is_resolved_and_validated(default_dataset, tmp_path, capsys, monkeypatch):
    from fastprogan.cli import main
    from fastprogan.training.graphs import resolve_cuda_graphs
    from fastprogan.training.precision import PrecisionPolicy
    from tests.training.helpers import tiny_cli_args

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    fp32 = PrecisionPolicy("fp32", "cuda", None, False, 1e-8)
    bf16 = PrecisionPolicy("bf16", "cuda", torch.bfloat16, False, 1e-8)
    monkeypatch.delattr(torch.cuda.CUDAGraph, "register_generator_state", raising=False)
    on, why = resolve_cuda_graphs("auto", cuda, bf16)
    assert not on and "torch >= 2.5" in why  # CUDA builds of torch >= 2.5 have it; this CPU build may not
    monkeypatch.setattr(torch.cuda.CUDAGraph, "register_generator_state", lambda self, g: None, raising=False)
    assert resolve_cuda_graphs("auto", cuda, fp32)[0] and resolve_cuda_graphs("auto", cuda, bf16)[0]
    assert not resolve_cuda_graphs("off", cuda, bf16)[0]
    on, why = resolve_cuda_graphs("auto", cpu, fp32)
    assert not on and "CUDA device" in why
    args = ["train", "--out", str(tmp_path / "r"), *tiny_cli_args(default_dataset)]
    assert main([*args, "--cuda-graphs", "on"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cuda-graphs on: they need a CUDA device" in err[0]
    assert main([*args, "--cuda-graphs", "sometimes"]) == 2
    assert "cuda_graphs must be one of auto, on, off" in capsys.readouterr().err
