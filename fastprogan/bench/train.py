"""The training iteration per provider, resolution and dtype: img/s, sec/kimg, peak memory, GPU-busy.

One iteration = one D step with the WGAN-GP penalty + one G step + the G_ema update
(:func:`fastprogan.bench.adapter.make_train_iteration`), at the paper's widths with the v2-1gpu
minibatch at each resolution (4..1024), in bf16 and fp32. The GPU-busy fraction is the device time of
all kernels of an iteration (torch.profiler) over its wall time: well below 1 means the host (Python,
dispatch, launches) is the bottleneck.

Providers are entries of :data:`TRAIN_PROVIDERS` (name -> factory(setup, session) -> (iteration, note));
a later fast path (CUDA graphs, fused conv kernels) adds one entry (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastprogan.bench import timing
from fastprogan.bench.adapter import TrainSetup, make_train_iteration, make_trainer_iteration
from fastprogan.bench.registry import Registry
from fastprogan.bench.runner import Session, Skipped, Task, attempt, spread
from fastprogan.bench.shapes import QUICK_BATCH, QUICK_CHANNELS, batch_for, resolutions

TrainFactory = Callable[[TrainSetup, Session], tuple[Callable[[], None], str]]
TRAIN_PROVIDERS: Registry[TrainFactory] = Registry("training provider")


def compile_backend(session: Session) -> str:
    """torch.compile's backend: the CLI's choice, else inductor on CUDA and "eager" (tracing only) on CPU."""
    if session.options.compile_backend:
        return session.options.compile_backend
    return "inductor" if session.cuda else "eager"


def require_compile(session: Session) -> str:
    """The backend to compile with, or Skipped when compiling is off for this run."""
    if not session.options.compile:
        raise Skipped("torch.compile providers are off (--no-compile)")
    import torch._dynamo

    torch._dynamo.reset()  # each row compiles its own graphs (no recompile limit, no stale guards)
    return compile_backend(session)


@TRAIN_PROVIDERS.register("eager-ref", "impl='ref' everywhere: what a straightforward PyTorch port runs")
def _eager_ref(setup: TrainSetup, session: Session) -> tuple[Callable[[], None], str]:
    return make_train_iteration(setup, impl="ref"), "impl=ref"


@TRAIN_PROVIDERS.register("fastprogan", "impl='auto': Triton epilogues on CUDA, fused resampling convs")
def _fastprogan(setup: TrainSetup, session: Session) -> tuple[Callable[[], None], str]:
    return make_train_iteration(setup, impl="auto"), "impl=auto"


@TRAIN_PROVIDERS.register(
    "eager", "the trainer's capture-safe step (impl='auto', fused Adam, device-side draws), no graphs"
)
def _eager(setup: TrainSetup, session: Session) -> tuple[Callable[[], None], str]:
    return make_trainer_iteration(setup, impl="auto", cuda_graphs=False), "impl=auto; --cuda-graphs off"


@TRAIN_PROVIDERS.register("graphs", "the trainer's step replayed as CUDA graphs (--cuda-graphs on)")
def _graphs(setup: TrainSetup, session: Session) -> tuple[Callable[[], None], str]:
    if not session.cuda:
        raise Skipped("CUDA graphs need a CUDA device")
    if setup.precision == "fp16":
        raise Skipped("fp16's GradScaler step is not capture-safe (--cuda-graphs auto keeps it eager)")
    return make_trainer_iteration(setup, impl="auto", cuda_graphs=True), "impl=auto; --cuda-graphs on"


@TRAIN_PROVIDERS.register(
    "compile-ref", "impl='ref' with torch.compile(G); D stays eager (the penalty's double backward)"
)
def _compile_ref(setup: TrainSetup, session: Session) -> tuple[Callable[[], None], str]:
    backend = require_compile(session)
    iteration = make_train_iteration(
        setup, impl="ref", wrap_generator=lambda G: torch.compile(G, backend=backend)
    )
    return iteration, f"impl=ref; compiled: G forward+backward (torch.compile backend={backend}); D eager"


def measure_row(session: Session, provider: str, setup: TrainSetup) -> list[dict]:
    """Build the iteration, warm it up, time it, profile it; one row."""
    factory = TRAIN_PROVIDERS[provider].factory
    step, note = factory(setup, session)
    device = session.device
    warmup, reps = (1, 3) if session.options.quick else (3, 10)
    timing.reset_peak_memory(device)
    t = timing.time_calls(step, device, warmup=warmup, reps=reps, max_s=8.0)
    peak = timing.peak_memory_mb(device)
    kernel_ms = timing.kernel_ms_per_call(step, device)
    img_per_s = setup.batch / (t.median_ms / 1e3)
    return [
        {
            "status": "ok",
            "detail": note,
            "median_ms": t.median_ms,
            "iqr_ms": t.iqr_ms,
            "reps": t.reps,
            "img_per_s": img_per_s,
            "sec_per_kimg": 1000.0 / img_per_s,
            "gpu_busy_frac": None if kernel_ms is None else kernel_ms / t.median_ms,
            "peak_mem_mb": peak,
        }
    ]


def _estimate(session: Session, provider: str, resolution: int, batch: int) -> float:
    if not session.cuda:
        return 6.0 if provider.startswith("compile") else 1.5
    if provider.startswith("compile"):
        return 45.0  # Inductor compiles G's forward and backward per resolution
    # Build + ~15 calls; a guess per call of 30 ms of host work + 50 ns per batch pixel (the planner
    # corrects it by how the finished rows of the provider did).
    return 3.0 + 15 * (0.03 + 5e-8 * batch * resolution * resolution)


def tasks(session: Session) -> list[Task]:
    """Priority: bf16 eager providers at every resolution, compiled at three, fp32 eager, the rest."""
    quick = session.options.quick
    res_list = spread(list(resolutions(quick, session.options.resolutions)))
    dtypes = session.dtypes(("bf16", "fp32"))
    providers = [e.name for e in TRAIN_PROVIDERS if session.wants_provider(e.name)]
    fast = [p for p in providers if not p.startswith("compile")]
    slow = [p for p in providers if p.startswith("compile")]
    # Eager providers in the first dtype everywhere, the compiled ones at three spread resolutions (an
    # Inductor compile of G costs ~45 s a row), the eager ones in the other dtypes, the rest compiled.
    order = [(dtypes[0], p, r) for p in fast for r in res_list]
    order += [(dtypes[0], p, r) for p in slow for r in res_list[:3]]
    order += [(d, p, r) for d in dtypes[1:] for p in fast for r in res_list]
    order += [(dtypes[0], p, r) for p in slow for r in res_list[3:]]
    order += [(d, p, r) for d in dtypes[1:] for p in slow for r in res_list]
    if quick:  # compile rows prove the code path once (tracing costs seconds per row on a CPU)
        order = [(d, p, r) for d, p, r in order if p in fast or (d == dtypes[-1] and r == res_list[0])]
    out = []
    for dtype_name, provider, r in order:
        batch = QUICK_BATCH if quick else batch_for(r)
        widths = {"fmap_base": 8 * QUICK_CHANNELS, "fmap_max": QUICK_CHANNELS} if quick else {}
        setup = TrainSetup(r, batch, dtype_name, session.device, **widths)
        identity = {
            "name": "train_iteration",
            "provider": provider,
            "resolution": r,
            "dtype": dtype_name,
            "mode": "d_step+g_step+ema",
            "batch": batch,
            "shape": f"{batch}x{setup.channels}x{r}x{r}",
        }
        out.append(
            Task(
                "train",
                f"train {provider} {dtype_name} {r}px",
                _estimate(session, provider, r, batch),
                lambda ident=identity, p=provider, s=setup: attempt(
                    ident, lambda: measure_row(session, p, s)
                ),
                kind=provider,
            )
        )
    return out
