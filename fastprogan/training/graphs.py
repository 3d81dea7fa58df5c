"""Training iterations without host overhead: one phase's D and G steps, eager or replayed as CUDA graphs.

Why: on an H100/H200 the official 1-GPU minibatch leaves a few ms of GPU work per iteration, while the
eager iteration dispatches hundreds of ops at 5-30 us of host time each: the GPU idles. A CUDA graph
replays a whole step with one launch (docs/performance.md has the numbers and the argument).

How (:class:`PhaseRunner`, one per phase, i.e. per ``(floor(lod), ceil(lod))``: fixed resolution,
minibatch, learning rate and set of trained parameters):

- every step reads its inputs from static buffers: the reals buffer (each batch is copied in with a
  non-blocking copy), a 0-dim fade-weight tensor during a fade (written once per round, outside the
  graphs), and the shared generator on the device, from which the step itself draws the latents and
  the mixing factors of the GLOBAL minibatch and keeps this rank's rows ``rank::world_size`` (the RNG
  contract of the trainer: on CPU the numbers of the former CPU-side draw, bit for bit);
- statistics are added into device accumulators (:class:`StepStats`) inside the step and read on the
  host once per tick;
- with graphs, the first ``warmup`` D and G steps of a phase run eagerly on a side stream (lazy
  initialisation, cuDNN autotuning, the Adam state after the per-phase reset), then the D step (+ EMA)
  and the G step are captured once each and replayed; a new runner (phase change, Adam reset, resume)
  captures again. A change of learning rate within a phase also re-captures (the rate is a constant
  inside the graph).

Multi-GPU: the flat gradient all-reduce (:func:`fastprogan.training.distributed.average_gradients`) runs
INSIDE the captured steps: NCCL (>= 2.9.6) supports stream capture, and keeping it inside leaves each
step one launch; outside it would split every step into two graphs with a host round trip between them.

:func:`build_training_iteration` is the public entry point for benchmarks (``fastprogan bench``
providers ``eager`` and ``graphs``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from fastprogan.training.config import CUDA_GRAPH_MODES, TrainingConfig
from fastprogan.training.ema import update_ema
from fastprogan.training.errors import ConfigError
from fastprogan.training.precision import PrecisionPolicy
from fastprogan.training.steps import (
    G_STAT_NAMES,
    StepContext,
    d_stat_names,
    discriminator_step_stats,
    generator_step_stats,
)

WARMUP_STEPS = 3  # eager steps per phase and step kind before capture (the torch docs' recipe uses 3)
NCCL_MIN_FOR_CAPTURE = (2, 9, 6)


def resolve_cuda_graphs(
    mode: str, device: torch.device, policy: PrecisionPolicy, world_size: int = 1
) -> tuple[bool, str]:
    """Whether the trainer replays CUDA graphs, and why (a sentence for the log).

    ``auto``: on for CUDA fp32/bf16 runs (every phase's shapes are static); off on other devices and for
    fp16, whose GradScaler reads its scale on the host every step. ``on`` raises ConfigError where graphs
    cannot run; ``off`` is the eager path.
    """
    if mode not in CUDA_GRAPH_MODES:
        raise ConfigError(f"cuda_graphs must be one of {', '.join(CUDA_GRAPH_MODES)}, got {mode!r}")
    if mode == "off":
        return False, "CUDA graphs off (--cuda-graphs off)"
    reason = None
    if device.type != "cuda":
        reason = f"they need a CUDA device, this run is on {device.type}"
    elif policy.use_loss_scaler:
        reason = "fp16's GradScaler reads its scale on the host every step (use bf16 or fp32 for graphs)"
    elif not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
        reason = "this torch cannot capture draws from the trainer's own CUDA generator (needs torch >= 2.5)"
    elif world_size > 1 and _nccl_version() < NCCL_MIN_FOR_CAPTURE:
        reason = f"NCCL {_nccl_version()} cannot capture the gradient all-reduce (needs >= 2.9.6)"
    if reason is None:
        return True, "CUDA graphs on: each phase's D and G steps are captured once and replayed"
    if mode == "on":
        raise ConfigError(f"--cuda-graphs on: {reason}")
    return False, f"CUDA graphs off (auto): {reason}"


def _nccl_version() -> tuple[int, ...]:
    try:
        v = torch.cuda.nccl.version()
    except (AttributeError, RuntimeError):
        return (0,)
    return tuple(v) if isinstance(v, tuple) else (v // 1000, v % 1000 // 100, v % 100)


class StepStats:
    """Device-side sums of the step statistics, read on the host once per tick.

    The accumulators are allocated once and zeroed in place, so captured graphs that add into them stay
    valid across reads.
    """

    def __init__(self, config: TrainingConfig, device: torch.device) -> None:
        self.d_names, self.g_names = d_stat_names(config), G_STAT_NAMES
        self.d = torch.zeros(len(self.d_names), device=device)  # [K_d] sums over D steps
        self.g = torch.zeros(len(self.g_names), device=device)  # [K_g] sums over G steps
        self.d_count = self.g_count = 0  # host counters: no sync

    def means(self) -> torch.Tensor:
        """[K_d + K_g] means since the last reset (device tensor; NaN where no step ran)."""
        d = self.d / self.d_count if self.d_count else torch.full_like(self.d, float("nan"))
        g = self.g / self.g_count if self.g_count else torch.full_like(self.g, float("nan"))
        return torch.cat([d, g])

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.d_names, *self.g_names)

    @property
    def empty(self) -> bool:
        return self.d_count == 0 and self.g_count == 0

    def reset(self) -> None:
        self.d.zero_()
        self.g.zero_()
        self.d_count = self.g_count = 0


class CudaGraphBackend:
    """The CUDA graph API the runner uses (tests substitute a fake to drive the wiring on CPU)."""

    def new_graph(self) -> Any:
        return torch.cuda.CUDAGraph()

    def capture(self, graph: Any, fn: Callable[[], None], generator: torch.Generator | None) -> None:
        """Record ``fn`` into ``graph`` (nothing executes); ``generator`` is registered so that every
        replay draws fresh numbers and advances it as eager calls would."""
        if generator is not None:
            register = getattr(graph, "register_generator_state", None)
            if register is None:
                raise ConfigError(
                    "--cuda-graphs: this torch cannot capture draws from a non-default CUDA generator "
                    "(CUDAGraph.register_generator_state is missing); upgrade torch or use --cuda-graphs off"
                )
            register(generator)
        torch.cuda.synchronize()
        # thread_local: the data loader's threads may call CUDA (pinned memory) while we capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            fn()

    def replay(self, graph: Any) -> None:
        graph.replay()

    @contextlib.contextmanager
    def warmup_stream(self, device: torch.device) -> Iterator[None]:
        """Eager warm-up steps on a side stream (the torch recipe before a capture)."""
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream(device).wait_stream(side)


class PhaseRunner:
    """The D and G steps of one phase, eager or CUDA-graph replayed (module docstring).

    ``d_step(reals)``: copy reals [B, C, R, R] into the static buffer, draw latents and mixing factors,
    one D step with the penalty, then the EMA update of ``G_ema`` (when given). ``g_step()``: draw
    latents, one G step. Statistics go into ``stats``.
    """

    def __init__(
        self,
        ctx: StepContext,
        *,
        lod: float,
        fading: bool,
        minibatch: int,
        reals_shape: tuple[int, int, int, int],
        generator: torch.Generator | None,
        stats: StepStats,
        G_ema: nn.Module | None = None,
        ema_beta: float = 0.999,
        rank: int = 0,
        world_size: int = 1,
        cuda_graphs: bool = False,
        backend: CudaGraphBackend | None = None,
        warmup: int = WARMUP_STEPS,
    ) -> None:
        self.ctx, self.lod, self.minibatch = ctx, lod, minibatch
        self.generator, self.stats = generator, stats
        self.G_ema, self.ema_beta = G_ema, ema_beta
        self.rank, self.world_size = rank, world_size
        self.device = next(ctx.G.parameters()).device
        self.latent_size = ctx.G.latent_size
        self.static_reals = torch.zeros(reals_shape, device=self.device)  # [B, C, R, R]
        # The fade weight lives on the device during a fade (None in a stable phase: no fade path).
        self.alpha = torch.ones((), device=self.device) if fading else None
        self.use_graphs = cuda_graphs
        self.backend = backend or (CudaGraphBackend() if cuda_graphs else None)
        self.warmup = warmup
        self._eager_left = {"d": warmup, "g": warmup}
        self._graphs: dict[str, Any] = {}
        self._captured_lr: dict[str, tuple[float, ...]] = {}
        self.captures = 0  # graphs captured by this runner (tests and logs)

    # ---- inputs --------------------------------------------------------------------------------
    def set_alpha(self, alpha: float) -> None:
        """Write this round's fade weight into the device tensor (outside any graph)."""
        if self.alpha is not None:
            self.alpha.fill_(alpha)

    def _draw(self, *shape: int, uniform: bool = False) -> torch.Tensor:
        """A draw for the GLOBAL minibatch on the device; this rank's rows rank::world_size."""
        fn = torch.rand if uniform else torch.randn
        x = fn(self.minibatch, *shape, generator=self.generator, device=self.device)  # [N_global, ...]
        return x[self.rank :: self.world_size] if self.world_size > 1 else x

    # ---- the two steps, as run eagerly or recorded ---------------------------------------------
    def _d_body(self) -> None:
        z = self._draw(self.latent_size)  # [N, latent]
        u = self._draw(1, 1, 1, uniform=True)  # [N, 1, 1, 1]
        stats = discriminator_step_stats(self.ctx, self.static_reals, z, u, self.lod, alpha=self.alpha)
        with torch.no_grad():
            self.stats.d.add_(stats)
        if self.G_ema is not None:
            update_ema(self.G_ema, self.ctx.G, self.ema_beta)

    def _g_body(self) -> None:
        loss = generator_step_stats(self.ctx, self._draw(self.latent_size), self.lod, alpha=self.alpha)
        with torch.no_grad():
            self.stats.g.add_(loss)

    def d_step(self, reals: torch.Tensor) -> None:
        """One D step (+ EMA) on ``reals`` [B, C, R, R]."""
        if reals.shape != self.static_reals.shape:
            raise ValueError(
                f"reals {tuple(reals.shape)} do not match this phase's buffer {tuple(self.static_reals.shape)}"
            )
        self.static_reals.copy_(reals, non_blocking=True)
        self._run("d", self._d_body, self.ctx.opt_D)
        self.stats.d_count += 1

    def g_step(self) -> None:
        """One G step."""
        self._run("g", self._g_body, self.ctx.opt_G)
        self.stats.g_count += 1

    def _run(self, kind: str, body: Callable[[], None], opt: torch.optim.Optimizer) -> None:
        if not self.use_graphs:
            body()
            return
        if self._eager_left[kind] > 0:
            self._eager_left[kind] -= 1
            with self.backend.warmup_stream(self.device):
                body()
            return
        lr = tuple(float(g["lr"]) for g in opt.param_groups)
        if kind not in self._graphs or self._captured_lr[kind] != lr:
            graph = self.backend.new_graph()
            self.backend.capture(graph, body, self.generator)
            self._graphs[kind], self._captured_lr[kind] = graph, lr
            self.captures += 1
        self.backend.replay(self._graphs[kind])


def build_training_iteration(
    G: nn.Module,
    D: nn.Module,
    opt_G: torch.optim.Optimizer,
    opt_D: torch.optim.Optimizer,
    policy: PrecisionPolicy,
    config: TrainingConfig,
    lod: float,
    *,
    minibatch: int,
    alpha: float | None = None,
    G_ema: nn.Module | None = None,
    cuda_graphs: bool = False,
    seed: int | None = None,
    warmup: int = WARMUP_STEPS,
) -> Callable[[torch.Tensor], None]:
    """One training iteration as the trainer runs it, for benchmarks: ``step = build_...(...)``, then
    ``step(reals)`` per iteration = one D step with the penalty (+ the G_ema update when ``G_ema`` is
    given) and one G step, latents and mixing factors drawn on the device inside the step.

    ``G``, ``D`` (on the training device), their optimizers (e.g. :func:`~fastprogan.training.steps.
    make_optimizer`, ``capturable=True`` for graphs), the precision ``policy`` and ``config`` as in the
    trainer; ``lod`` picks the resolution (``reals`` must be [minibatch, C, R, R]); ``alpha`` (fade
    weight in (0, 1), or None for a stable phase) is held in a device tensor as during a real fade.
    ``cuda_graphs=True`` (CUDA only) runs ``warmup`` eager iterations, then captures the D and G steps
    once and replays them. fp16's GradScaler is not capturable: ConfigError with cuda_graphs=True. The
    returned callable has ``.runner`` (the :class:`PhaseRunner`) and ``.stats`` (:class:`StepStats`);
    call ``torch.cuda.synchronize()`` before reading a timer.
    """
    device = next(G.parameters()).device
    if cuda_graphs:
        resolve_cuda_graphs("on", device, policy)
    fading = alpha is not None and alpha < 1.0
    level = G.level(lod)
    if fading and not level.fading:
        raise ValueError(f"alpha {alpha} given for a stable lod {lod}")
    ctx = StepContext(G, D, opt_G, opt_D, policy.make_scaler(), policy.make_scaler(), policy, config)
    generator = None  # meta tensors (the dispatch counter) have no generator: the default one draws
    if device.type != "meta":
        generator = torch.Generator(device=device).manual_seed(config.seed if seed is None else seed)
    stats = StepStats(config, device)
    res = level.resolution
    runner = PhaseRunner(
        ctx,
        lod=lod,
        fading=fading or level.fading,
        minibatch=minibatch,
        reals_shape=(minibatch, G.num_channels, res, res),
        generator=generator,
        stats=stats,
        G_ema=G_ema,
        ema_beta=config.ema_beta,
        cuda_graphs=cuda_graphs,
        warmup=warmup,
    )
    runner.set_alpha(level.alpha if alpha is None else alpha)

    def step(reals: torch.Tensor) -> None:
        runner.d_step(reals)
        runner.g_step()

    step.runner = runner  # type: ignore[attr-defined]
    step.stats = stats  # type: ignore[attr-defined]
    return step
