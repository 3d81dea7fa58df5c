"""The training loop: the official ProGAN recipe, resolution-native, resumable bit-exactly.

Per round (the schedule is re-read every ``minibatch_repeats`` minibatches, as the official code does)::

    phase = schedule_at(config, nimg)                 # lod, resolution, minibatch, lr
    if (floor(lod), ceil(lod)) changed: reset both Adam states   (checkpoint first: end of a phase)
    repeat minibatch_repeats times:
        repeat d_repeats times: D step (penalty), G_ema update, nimg += minibatch
        G step
    tick bookkeeping: log line, stats, grids, checkpoints, metrics

Randomness: ``--seed`` determines everything. torch's, numpy's and Python's global RNGs are seeded from
it, and every rank draws the latents and the penalty's mixing factors u (from a generator on the training device, inside the
step, so CUDA graphs replay the draw; on CPU the same numbers as a CPU-side draw) and the mirror coins
(a CPU generator) for the GLOBAL minibatch from generators identical on every rank and keeps its own slice (rank r takes samples
r, r + W, ...: the same samples the data loader gives rank r; the loader's order is global too), so a
W-process run sees the same numbers as a 1-process run, and a run resumed on another world size
continues the same sequence. The generator states, the global RNGs and the data loader position are
stored once per checkpoint (they are the same on every rank); checkpoints are taken between rounds
only, so a resumed run continues exactly where the interrupted one was.

Wall-clock time is not in checkpoints (so the same command writes byte-identical checkpoint files):
a resumed run takes its elapsed time from the last tick of ``stats.jsonl`` at or before the checkpoint.

Run directory: a new run refuses an ``--out`` that holds another run's files unless ``overwrite`` (then
those files are deleted first) or a resume of that run. SIGTERM (preemption, ``torchrun`` stopping the
job) makes the loop finish its current round, write a checkpoint and raise Interrupted: the delay is at
most one round (``minibatch_repeats`` minibatches) plus one checkpoint write.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastprogan.data.errors import DatasetError
from fastprogan.training import checkpoint as ckpt
from fastprogan.training import distributed as dist_utils
from fastprogan.training.config import TrainingConfig
from fastprogan.training.ema import make_ema
from fastprogan.training.errors import ConfigError, Interrupted, NonFiniteError, output_error
from fastprogan.training.feedback import Feedback, RankLog, peak_memory_gib, write_json
from fastprogan.training.graphs import PhaseRunner, StepStats, resolve_cuda_graphs
from fastprogan.training.images import render, save_grid
from fastprogan.training.networks import build_discriminator, build_generator
from fastprogan.training.precision import configure_tf32, describe_precision, resolve_precision
from fastprogan.training.schedule import TrainingPhase, minibatch_for, schedule_at
from fastprogan.training.steps import StepContext, discriminator_step, generator_step, make_optimizer

# Settings that may change when resuming (they do not change the training arithmetic).
RESUME_OVERRIDABLE = frozenset(
    {
        "data",
        "total_kimg",
        "snapshot_ticks",
        "snapshot_kimg",
        "image_snapshot_ticks",
        "keep",
        "grid_images",
        "metrics",
        "metrics_every_ticks",
        "metrics_images",
        "num_workers",
        "cpu_threads",
        "verify_data",
        "skip_bad",
        "cuda_graphs",
    }
)

# What a run writes into its directory (``--overwrite`` deletes exactly these; OUT/dataset, the embedded
# default dataset, is kept: it is rebuilt identically anyway).
RUN_FILES = ("config.json", "log.txt", "stats.jsonl", "reals.png", "grid-latest.png")
RUN_GLOBS = ("checkpoint-*.pt", "grid-*.png", ".*.tmp-*", "metrics*.json", "log-rank*.txt")
RUN_DIRS = ("tensorboard",)


def run_files(run_dir: Path) -> list[Path]:
    """The files and directories of a training run found in ``run_dir`` (empty when there is none)."""
    if not run_dir.is_dir():
        return []
    found = {run_dir / n for n in (*RUN_FILES, *RUN_DIRS) if (run_dir / n).exists()}
    for pattern in RUN_GLOBS:
        found.update(run_dir.glob(pattern))
    return sorted(found)


def stored_data_path(data: str | None, run_dir: Path) -> str | None:
    """``data`` as stored in config.json and checkpoints: relative to the run directory when it lies
    inside it (so the directory can be moved), else absolute (so it does not depend on the cwd)."""
    if data is None:
        return None
    path, base = Path(data).resolve(), run_dir.resolve()
    if path == base or base in path.parents:
        return path.relative_to(base).as_posix()
    return str(path)


def resolve_stored_data(data: str | None, run_dir: Path) -> str | None:
    """Inverse of :func:`stored_data_path` for a checkpoint in ``run_dir``. A relative path is tried
    against the run directory first, then (older builds stored it as given) against the cwd."""
    if data is None or Path(data).is_absolute():
        return data
    inside = run_dir / data
    if inside.exists() or not Path(data).exists():
        return str(inside.resolve())
    return str(Path(data).resolve())


def elapsed_from_stats(run_dir: Path, nimg: int) -> float:
    """Seconds of training before ``nimg``: time_s of the last tick at or before it in stats.jsonl."""
    elapsed = 0.0
    try:
        lines = (run_dir / "stats.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return elapsed
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        if "time_s" in entry and round(float(entry.get("kimg", 0)) * 1000) <= nimg:
            elapsed = float(entry["time_s"])
    return elapsed


def open_training_data(config: TrainingConfig, run_dir: Path):
    """Open ``config.data`` (or build the embedded default dataset under ``run_dir/dataset``) and check
    it against the config. Returns (dataset, config with the resolution resolved)."""
    from fastprogan.data import open_dataset

    if config.data is None:
        from fastprogan.data import materialize_default_dataset

        path = materialize_default_dataset(run_dir / "dataset")
        config = config.replace(data=str(path))
    path = Path(config.data)
    if not path.exists():
        raise ConfigError(f"dataset {path} does not exist")
    try:
        dataset = open_dataset(path)
    except (OSError, ValueError) as exc:  # DatasetError is a ValueError/OSError subclass or similar
        raise ConfigError(f"dataset {path}: {exc}") from None
    resolution = config.resolution or dataset.max_resolution
    if dataset.max_resolution < resolution:
        raise ConfigError(
            f"dataset {path} holds images up to {dataset.max_resolution}px, smaller than the config's "
            f"resolution {resolution}px (pass --resolution {dataset.max_resolution} or a bigger dataset)"
        )
    needed = [2**r for r in range(2, int(math.log2(resolution)) + 1)]
    missing = [r for r in needed if r not in set(dataset.resolutions)]
    if missing:
        raise ConfigError(f"dataset {path} lacks the resolution level(s) {missing} that training needs")
    for r in needed:  # open every level now (a missing, truncated or corrupt file fails here, not mid-run)
        try:
            dataset.images(r)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"dataset {path}: {exc}") from None
    if config.resolution is None:
        config = config.replace(resolution=resolution)
    return dataset, config


class Trainer:
    """One training run in ``run_dir``. ``Trainer(run_dir, config).run()``; to resume, pass
    ``resume="latest"``, ``"auto"`` (latest if there is a checkpoint, else a new run from ``config``)
    or a checkpoint path (the run's config then comes from the checkpoint, with ``overrides`` applied:
    RESUME_OVERRIDABLE fields may change, others only be repeated with the run's own values).

    A new run refuses a ``run_dir`` holding another run's files (ConfigError naming ``--resume`` and
    ``--overwrite``) unless ``overwrite=True``, which deletes them first. Every check that can be made
    before training (run directory writable, dataset levels readable, minibatches fit the dataset and
    the minibatch-stddev groups) is made in the constructor. ``run()`` raises Interrupted after
    writing a checkpoint when the process gets SIGTERM."""

    def __init__(
        self,
        run_dir: str | Path,
        config: TrainingConfig | None = None,
        *,
        resume: str | None = None,
        overrides: dict[str, Any] | None = None,
        device: str | None = None,
        progress: bool = True,
        env: dist_utils.DistEnv | None = None,
        overwrite: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.env = env or dist_utils.env_from_torchrun()
        self.device = dist_utils.device_for(self.env, device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device}: CUDA is not available")

        state = None
        # "auto": resume when the run directory has a checkpoint, else start (torchrun --max-restarts).
        # Every rank resolves it before joining the process group, so no rank can see a checkpoint
        # written by this job: they all find the same file.
        path = ckpt.resolve_resume(resume, self.run_dir) if resume is not None else None
        self.data_note = ""
        self.resume_warnings: list[str] = []  # set by _load_state, logged when the run starts
        if path is not None:
            state = ckpt.load_checkpoint(path)
            stored = dict(state["config"])
            stored["data"] = resolve_stored_data(stored.get("data"), path.parent)
            given = {k: v for k, v in (overrides or {}).items() if not (k == "data" and v is None)}
            if "data" in given:
                given["data"] = str(Path(given["data"]).resolve())
                self.data_note = "from --data"
            else:
                self.data_note = f"from {path.name}"
            before = TrainingConfig.from_dict(stored)
            config = TrainingConfig.from_dict({**stored, **given})
            # A setting given again with the run's own value is no change (--resume auto repeats the
            # whole command line on every restart).
            changed = sorted(
                k for k in given if k not in RESUME_OVERRIDABLE and getattr(config, k) != getattr(before, k)
            )
            if changed:
                raise ConfigError(
                    f"cannot change {', '.join(changed)} when resuming (the run's config comes from "
                    f"{path.name}); only {', '.join(sorted(RESUME_OVERRIDABLE))} may change"
                )
            self.resumed_from: Path | None = path
        else:
            if config is None:
                raise ConfigError("a config is needed for a new run")
            if overrides:
                config = config.replace(**overrides)
            if config.data is not None:  # absolute: the run must not depend on the working directory
                config = config.replace(data=str(Path(config.data).resolve()))
            self.resumed_from = None
        if self.env.is_main:
            self._prepare_run_dir(config, resume, overwrite)
        if config.metrics:
            try:
                from fastprogan.metrics import evaluate  # noqa: F401 - fail now, not at the first tick
            except ImportError as exc:
                raise ConfigError(
                    f"--metrics needs fastprogan.metrics, which this installation cannot import ({exc})"
                ) from None
        self.dataset, self.config = open_training_data(config, self.run_dir)
        cfg = self.config
        self.num_channels = int(self.dataset.channels)
        if state is not None and int(state["meta"]["num_channels"]) != self.num_channels:
            raise ConfigError(
                f"{path.name} holds {state['meta']['num_channels']}-channel networks, dataset {cfg.data} has "
                f"{self.num_channels}-channel images: resume with a dataset of the same channel count"
            )
        self._check_batches_fit()

        if self.device.type == "cpu" and cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        self.policy = resolve_precision(cfg.precision, self.device)
        if self.device.type == "cuda":
            configure_tf32(cfg.allow_tf32)
        dist_utils.init_process_group(self.env, self.device)

        # Networks: identical on every rank (same seed, then rank 0's broadcast). numpy's and Python's
        # global RNGs are seeded too: nothing here draws from them, but user code and libraries may,
        # and their states go into checkpoints, which must be the same bytes for the same command.
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)  # noqa: NPY002 - the legacy global state is the one to seed
        random.seed(cfg.seed)
        self.G = build_generator(cfg, self.num_channels, self.policy.pixelnorm_eps).to(self.device)
        self.D = build_discriminator(cfg, self.num_channels).to(self.device)
        dist_utils.broadcast_parameters(self.G, self.env)
        dist_utils.broadcast_parameters(self.D, self.env)
        self.G_ema = make_ema(self.G)
        self.opt_G = self._make_optimizer(self.G)
        self.opt_D = self._make_optimizer(self.D)
        self.scaler_G = self.policy.make_scaler()
        self.scaler_D = self.policy.make_scaler()
        sync = dist_utils.average_gradients if self.env.enabled else None
        self.ctx = StepContext(
            self.G,
            self.D,
            self.opt_G,
            self.opt_D,
            self.scaler_G,
            self.scaler_D,
            self.policy,
            cfg,
            **({"sync_grads": lambda m: sync(m, self.env)} if sync else {}),
        )
        self.generators = {
            # Shared by all ranks: global-batch latents and mixing factors, drawn on the device, sliced per rank.
            "shared": torch.Generator(device=self.device).manual_seed(cfg.seed),
            # Shared by all ranks too: mirror coins for the global minibatch, sliced per rank.
            "mirror": torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919),
        }

        # Progress (all of it goes into checkpoints).
        self.nimg = 0
        self.tick = 0
        self.tick_start_nimg = 0
        self.prev_lod_key: tuple[int, int] | None = None
        self.elapsed_before = 0.0
        self.snapshot_index = 0  # number of snapshot_kimg periods already passed
        self.auto_batch: dict[int, int] = {}  # resolution -> per-GPU batch found by --batch auto
        self._auto_batch_noted = False
        self.loader = None
        self._loader_state: dict[str, Any] | None = None
        self.last_checkpoint: Path | None = None
        self.last_checkpoint_nimg = -1
        self._round_phase: TrainingPhase | None = None  # the schedule the last round trained at
        self._stop_signal: int | None = None
        if state is not None:
            self._load_state(state)

        self.progress = progress
        self.feedback: Feedback | None = None  # opened by run()
        self._rank_log: RankLog | None = None  # ranks other than 0: their data-integrity lines

    # ---- setup helpers ------------------------------------------------------------------------
    def _make_optimizer(self, module: torch.nn.Module) -> torch.optim.Adam:
        """Fused Adam (capturable when this run replays CUDA graphs): steps.make_optimizer."""
        return make_optimizer(
            module.parameters(), self.config, self.device, capturable=self._cuda_graphs()[0]
        )

    def _cuda_graphs(self) -> tuple[bool, str]:
        """(on?, the sentence for the log), decided once from --cuda-graphs, the device and precision."""
        if getattr(self, "_graphs_decision", None) is None:
            self._graphs_decision = resolve_cuda_graphs(
                self.config.cuda_graphs, self.device, self.policy, self.env.world_size
            )
        return self._graphs_decision

    def _reset_optimizers(self) -> None:
        """Forget both Adam states (moments and step counts), as the official trainer does per phase.

        Captured graphs point at the old state tensors: the phase's runner is dropped, so the next round
        warms up and captures again."""
        for opt in (self.opt_G, self.opt_D):
            opt.state.clear()
        self._runner = None

    def _prepare_run_dir(self, config: TrainingConfig, resume: str | None, overwrite: bool) -> None:
        """Refuse an ``--out`` holding another run (unless ``overwrite``: delete its files), create the
        directory and prove it is writable, all before any training compute (rank 0)."""
        d = self.run_dir
        if d.exists() and not d.is_dir():
            raise ConfigError(f"--out {d}: exists and is not a directory; pass another --out")
        resuming_here = self.resumed_from is not None and self.resumed_from.parent.resolve() == d.resolve()
        if overwrite and resuming_here:
            raise ConfigError(
                f"--overwrite with --resume {resume} would delete the checkpoint being resumed "
                f"({self.resumed_from}); drop --overwrite"
            )
        # --resume auto without a checkpoint: a restart of this run killed before its first checkpoint
        # (torchrun --max-restarts); its leftovers are this run's, so they are kept and appended to.
        restart = resume == "auto" and self.resumed_from is None
        existing = [] if resuming_here or restart else run_files(d)
        if existing and not overwrite:
            names = ", ".join(p.name for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
            raise ConfigError(
                f"--out {d} already holds another run ({names}): pass --resume latest to continue "
                "it, --overwrite to replace it, or another --out"
            )
        for p in existing:
            try:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            except OSError as exc:
                raise output_error(p, exc, doing="delete") from None
        probe = d / f".write-test.tmp-{os.getpid()}"
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            try:
                probe.unlink(missing_ok=True)
            except OSError:
                pass
            raise output_error(d if not d.is_dir() else probe.parent, exc, doing="write to --out") from None

    def _stored_config(self, config: TrainingConfig | None = None) -> dict[str, Any]:
        """The config as config.json and checkpoints store it (data path relative to the run dir)."""
        d = (config or self.config).to_dict()
        d["data"] = stored_data_path(d["data"], self.run_dir)
        return d

    def _check_batches_fit(self) -> None:
        """ConfigError, before any training, when a resolution's minibatch cannot be drawn from the
        dataset or split into minibatch-stddev groups on this job's processes."""
        cfg, w, n = self.config, self.env.world_size, self.dataset.num_images
        first = int(math.log2(cfg.lod_initial_resolution))
        for res in [2**r for r in range(first, int(math.log2(cfg.resolution)) + 1)]:
            mb = minibatch_for(cfg, res, w)
            setting = f"minibatch_dict[{res}]" if res in cfg.minibatch_dict else "minibatch_base"
            if mb > n:
                raise ConfigError(
                    f"the minibatch at {res}px ({setting} = {mb}) is larger than the {n} images of dataset "
                    f"{cfg.data}: lower it (--minibatch-base, --set minibatch_dict=...) or use a bigger dataset"
                )
            per_rank = mb // w
            group = min(cfg.mbstd_group_size, per_rank)
            if group > 1 and per_rank % group:
                raise ConfigError(
                    f"the minibatch at {res}px ({setting} = {mb}, {per_rank} per process) is not divisible "
                    f"by the minibatch-stddev group {group} (mbstd_group_size): use a multiple of {group} "
                    "per process, or change --set mbstd_group_size"
                )

    def _load_state(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        if "opt_G" not in state:  # an imported network (fastprogan import-official): fine-tune from nimg 0
            return
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.scaler_G.load_state_dict(state["scaler_G"])
        self.scaler_D.load_state_dict(state["scaler_D"])
        p = state["progress"]
        self.nimg, self.tick, self.tick_start_nimg = int(p["nimg"]), int(p["tick"]), int(p["tick_start_nimg"])
        self.prev_lod_key = tuple(p["prev_lod_key"]) if p["prev_lod_key"] is not None else None
        assert self.resumed_from is not None
        self.elapsed_before = elapsed_from_stats(self.resumed_from.parent, self.nimg)
        self.snapshot_index = int(p["snapshot_index"])
        self.auto_batch = {int(k): int(v) for k, v in state["auto_batch"].items()}
        self._loader_state = state["loader"]
        # Warnings (a generator state of another kind, re-seeded) are logged once the run's log opens.
        self.resume_warnings = ckpt.restore_rng_state(
            ckpt.rng_state_of(state["rng"], self.resumed_from), self.generators, self.resumed_from
        )
        self.last_checkpoint, self.last_checkpoint_nimg = self.resumed_from, self.nimg

    # ---- schedule / data ----------------------------------------------------------------------
    def phase_at(self, nimg: int) -> TrainingPhase:
        """The schedule for this job's process count, with ``--batch auto`` sizes substituted."""
        phase = schedule_at(self.config, nimg, self.env.world_size)
        if self.config.batch == "auto":
            per_gpu = self._auto_batch_for(phase)
            if per_gpu is not None:
                phase = TrainingPhase(**{**phase.__dict__, "minibatch": per_gpu * self.env.world_size})
        return phase

    def _auto_batch_for(self, phase: TrainingPhase) -> int | None:
        if phase.resolution in self.auto_batch:
            return self.auto_batch[phase.resolution]
        if self.device.type != "cuda":
            if not self._auto_batch_noted:
                self.feedback_log("--batch auto needs a CUDA device; using the preset's minibatch")
                self._auto_batch_noted = True
            return None
        from fastprogan.training.batch_size import probe_batch_size

        start = phase.minibatch // self.env.world_size
        group = max(1, self.config.mbstd_group_size)
        found = probe_batch_size(
            lambda b: self._probe_step(b, phase), start=start, multiple=group, on_oom=torch.cuda.empty_cache
        )
        # Every rank must use the same size: take the smallest; and the global batch must fit the dataset.
        if self.env.enabled:
            found = min(dist_utils.gather_objects(found, self.env))
        found = max(1, min(found, self.dataset.num_images // self.env.world_size // group * group))
        self.auto_batch[phase.resolution] = found
        self.feedback_log(f"--batch auto: {found} per GPU at {phase.resolution}px (preset: {start})")
        return found

    def _probe_step(self, batch: int, phase: TrainingPhase) -> None:
        """One D + G step at ``batch`` on throw-away copies (weights and RNG streams untouched)."""
        import copy

        G, D = copy.deepcopy(self.G), copy.deepcopy(self.D)
        ctx = StepContext(
            G,
            D,
            self._make_optimizer(G),
            self._make_optimizer(D),
            self.policy.make_scaler(),
            self.policy.make_scaler(),
            self.policy,
            self.config,
        )
        try:
            res, c = phase.resolution, self.num_channels
            reals = torch.zeros(batch, c, res, res, device=self.device)
            z = torch.zeros(batch, G.latent_size, device=self.device)
            u = torch.full((batch, 1, 1, 1), 0.5, device=self.device)
            discriminator_step(ctx, reals, z, u, phase.lod)
            generator_step(ctx, z, phase.lod)
            torch.cuda.synchronize(self.device)
        finally:
            del G, D, ctx
            torch.cuda.empty_cache()

    def _ensure_loader(self, phase: TrainingPhase) -> None:
        from fastprogan.data import ImageLoader

        per_rank = phase.minibatch // self.env.world_size
        if self.loader is not None and (self.loader.resolution, self.loader.batch_size) == (
            phase.resolution,
            per_rank,
        ):
            return
        start = self.loader.state_dict() if self.loader is not None else self._loader_state
        if self.loader is not None:
            self.loader.close()
        self.loader = ImageLoader(
            self.dataset,
            phase.resolution,
            per_rank,
            seed=self.config.seed,
            rank=self.env.rank,
            world_size=self.env.world_size,
            num_workers=self.config.num_workers,
            start=start,
            **self._integrity(),
        )

    def _integrity(self) -> dict:
        """The loaders' data-integrity options (fastprogan.data.loader: verify, skip_bad, log)."""
        return {"verify": self.config.verify_data, "skip_bad": self.config.skip_bad, "log": self.data_log}

    def data_log(self, message: str) -> None:
        """A data-integrity line: rank 0 logs it; another rank writes it to its own log-rank<R>.txt and
        keeps it for rank 0, which logs it, tagged with the rank, at the next tick."""
        if self.env.is_main:
            self.feedback_log(message)
            return
        if self._rank_log is None:
            self._rank_log = RankLog(self.run_dir, self.env.rank)
        self._rank_log.log(message)

    def _gather_rank_logs(self) -> None:
        """At a tick (every rank is here): rank 0 logs the other ranks' data-integrity lines.

        A collective only where such lines can appear (skip_bad; without it a corrupt image stops the
        run on the rank that read it, which writes its log-rank<R>.txt and exits)."""
        if not (self.env.enabled and self.config.verify_data and self.config.skip_bad):
            return
        mine = self._rank_log.take() if self._rank_log is not None else []
        for rank, lines in enumerate(dist_utils.gather_objects(mine, self.env)):
            for line in lines if rank != self.env.rank else []:
                self.feedback_log(f"rank {rank}: {line}")

    def _next_reals(self, phase: TrainingPhase) -> torch.Tensor:
        from fastprogan.data import fade_reals, prepare_reals

        batch = next(self.loader)  # uint8 [B, C, R, R]
        flip = None
        if self.config.mirror:  # coins for the global minibatch, this rank's slice
            coins = torch.rand(phase.minibatch, generator=self.generators["mirror"]) < 0.5  # [N_global]
            flip = coins[self.env.rank :: self.env.world_size]
        reals = prepare_reals(batch, self.device, mirror=self.config.mirror, flip=flip)
        return fade_reals(reals, phase.alpha)  # [B, C, R, R] in [-1, 1]

    def _phase_runner(self, phase: TrainingPhase) -> PhaseRunner:
        """This phase's D/G step runner (graphs.py): made at a phase change, after an Adam reset and on
        resume (each new runner warms up and captures its CUDA graphs again). It draws the latents and
        mixing factors of the global minibatch from ``generators["shared"]`` on the device, inside the
        steps, and keeps this rank's rows."""
        key = (phase.lod_key, phase.minibatch)
        runner = getattr(self, "_runner", None)
        if runner is not None and self._runner_key == key:
            return runner
        on, why = self._cuda_graphs()
        if not getattr(self, "_graphs_logged", False):  # first runner of this Trainer: say how it runs
            self.feedback_log(why)
            self._graphs_logged = True
        per_rank = phase.minibatch // self.env.world_size
        res = phase.resolution
        self._runner = PhaseRunner(
            self.ctx,
            lod=phase.lod,
            fading=phase.lod_key[0] != phase.lod_key[1],
            minibatch=phase.minibatch,
            reals_shape=(per_rank, self.num_channels, res, res),
            generator=self.generators["shared"],
            stats=self._step_stats(),
            G_ema=self.G_ema if self.env.is_main else None,
            ema_beta=self.config.ema_beta,
            rank=self.env.rank,
            world_size=self.env.world_size,
            cuda_graphs=on,
        )
        self._runner_key = key
        return self._runner

    def _step_stats(self) -> StepStats:
        """The device-side statistic sums of the current tick (one set per Trainer, zeroed per tick)."""
        if getattr(self, "_stats", None) is None:
            self._stats = StepStats(self.config, self.device)
        return self._stats

    # ---- feedback -----------------------------------------------------------------------------
    def feedback_log(self, message: str) -> None:
        if self.feedback is not None:
            self.feedback.log(message)

    def write_grid(self, lod: float) -> None:
        """The fixed-latent grid (seeds 0..grid_images-1) from G_ema at ``lod``: grid-<kimg>.png and
        grid-latest.png (rank 0)."""
        if not self.env.is_main:
            return
        images = render(self.G_ema, range(self.config.grid_images), lod, self.device)
        name = f"grid-{self.nimg / 1000:08.3f}.png"
        grid = save_grid(images, [self.run_dir / name, self.run_dir / "grid-latest.png"])
        if self.feedback is not None:
            self.feedback.image("fakes", grid, self.nimg)

    def write_reals_grid(self) -> None:
        if not self.env.is_main:
            return
        n = min(self.config.grid_images, self.dataset.num_images)
        reals = torch.from_numpy(self.dataset.images(self.config.resolution)[:n].copy())  # uint8 [n, C, R, R]
        grid = save_grid(reals, [self.run_dir / "reals.png"])
        if self.feedback is not None:
            self.feedback.image("reals", grid, self.nimg)

    # ---- checkpoints --------------------------------------------------------------------------
    def checkpoint(self, phase: TrainingPhase) -> Path | None:
        """Write a checkpoint (collective: every rank calls it; rank 0 writes) and a grid."""
        if self.nimg == self.last_checkpoint_nimg:
            return self.last_checkpoint
        path = None
        if self.env.is_main:
            state = {
                "config": self._stored_config(),
                "G": self.G.state_dict(),
                "D": self.D.state_dict(),
                "G_ema": self.G_ema.state_dict(),
                "opt_G": self.opt_G.state_dict(),
                "opt_D": self.opt_D.state_dict(),
                "scaler_G": self.scaler_G.state_dict(),
                "scaler_D": self.scaler_D.state_dict(),
                "progress": {
                    "nimg": self.nimg,
                    "tick": self.tick,
                    "tick_start_nimg": self.tick_start_nimg,
                    "prev_lod_key": list(self.prev_lod_key) if self.prev_lod_key is not None else None,
                    "snapshot_index": self.snapshot_index,
                },
                "meta": {
                    "lod": phase.lod,
                    "resolution": phase.resolution,
                    "max_resolution": self.config.resolution,
                    "num_channels": self.num_channels,
                    "latent_size": self.G.latent_size,
                    "kimg": self.nimg / 1000.0,
                    "pixelnorm_eps": self.policy.pixelnorm_eps,
                    "precision": self.policy.name,
                },
                "loader": self.loader.state_dict() if self.loader is not None else self._loader_state,
                "auto_batch": dict(self.auto_batch),
                # The same on every rank (all generators are global), so stored once.
                "rng": ckpt.capture_rng_state(self.generators),
            }
            path = ckpt.save_checkpoint(state, self.run_dir, self.nimg, keep=self.config.keep)
            self.feedback_log(f"checkpoint {path.name} (kimg {self.nimg / 1000:.1f}, lod {phase.lod:.2f})")
            self.write_grid(phase.lod)
        dist_utils.barrier(self.env)  # a rank stopping (SIGTERM) must not exit before rank 0 wrote it
        self.last_checkpoint, self.last_checkpoint_nimg = path, self.nimg
        return path

    # ---- guards -------------------------------------------------------------------------------
    def _stop_non_finite(self, what: str, phase: TrainingPhase) -> None:
        good = ckpt.list_checkpoints(self.run_dir)
        keep = f"the last good checkpoint is {good[-1]}" if good else "no checkpoint was written yet"
        raise NonFiniteError(
            f"{what} went non-finite at kimg {self.nimg / 1000:.3f} (lod {phase.lod:.3f}, "
            f"{phase.resolution}px): stopping; {keep}"
        )

    def _check_weights(self, phase: TrainingPhase) -> None:
        bad = ckpt.first_non_finite(
            {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict()}
        )
        if bad is not None:
            self._stop_non_finite(bad, phase)

    # ---- the loop -----------------------------------------------------------------------------
    def run(self, *, stop_after_ticks: int | None = None) -> Path | None:
        """Train until ``total_kimg`` (or ``stop_after_ticks`` more ticks); returns the last checkpoint."""
        cfg = self.config
        self._t_start = time.time()
        self.feedback = Feedback(
            self.run_dir,
            enabled=self.env.is_main,
            progress=self.progress,
            total_kimg=cfg.total_kimg,
            initial_kimg=self.nimg / 1000,
        )
        if self.env.is_main:
            ckpt.remove_stale_temporaries(self.run_dir)
            # The config as given, plus what "auto" resolved to on this machine.
            write_json(
                self.run_dir / "config.json",
                {**self._stored_config(), "resolved_precision": self.policy.name},
            )
        self.feedback.open_tensorboard()
        how = f"resumed from {self.resumed_from}" if self.resumed_from else "new run"
        used = f" ({self.data_note})" if self.data_note else ""
        self.feedback_log(
            f"fastprogan train: {how} in {self.run_dir}; device {self.device}, "
            f"precision {describe_precision(cfg.precision, self.policy)}, "
            f"{self.env.world_size} process(es); {self.num_channels} channel(s), dataset {cfg.data}{used} "
            f"({self.dataset.num_images} images)"
        )
        self.feedback_log("config: " + cfg.to_json().replace("\n", "\n  "))
        for warning in self.resume_warnings:
            self.feedback_log(warning)
        if cfg.num_gpus != self.env.world_size:
            self.feedback_log(
                f"note: preset {cfg.preset} is tuned for {cfg.num_gpus} GPU(s); this job has "
                f"{self.env.world_size} process(es), each trains on minibatch / {self.env.world_size}"
            )
        total_nimg = round(cfg.total_kimg * 1000)
        if self.nimg >= total_nimg:
            self.feedback_log(
                f"run already finished: {self.nimg / 1000:g} kimg trained of total_kimg {cfg.total_kimg:g}; "
                f"nothing to do (its last checkpoint is {self.last_checkpoint}; pass a larger --total-kimg "
                "to train longer)"
            )
            self.feedback.close()
            return self.last_checkpoint
        if self.nimg == 0:
            self.write_reals_grid()
        ticks_left = stop_after_ticks
        tick_time = time.time()
        timed_nimg = self.nimg  # images trained by THIS process since tick_time (not before a resume)
        maintenance_s = 0.0
        phase = self.phase_at(self.nimg)
        restore_signals = self._catch_sigterm()
        try:
            while self.nimg < total_nimg:
                phase = self.phase_at(self.nimg)
                key = phase.lod_key
                if self.prev_lod_key is not None and key != self.prev_lod_key:
                    self._check_pending_stats(phase)
                    self.checkpoint(self._phase_before(phase))  # end of a phase
                if cfg.reset_opt_for_new_lod and key != self.prev_lod_key:
                    self._reset_optimizers()
                self.prev_lod_key = key
                self._round_phase = phase
                self._ensure_loader(phase)
                for opt in (self.opt_G, self.opt_D):
                    for group in opt.param_groups:
                        group["lr"] = phase.lr

                scale_before = self.scaler_D.get_scale() if self.policy.use_loss_scaler else None
                self._train_round(phase)  # statistics stay on the device until the tick
                if scale_before is not None:  # fp16: the GradScaler syncs anyway; check every round
                    self._check_fp16_round(phase, scale_before)
                self.feedback.advance(self.nimg / 1000)
                self._stop_if_signalled(phase)

                done = self.nimg >= total_nimg
                period = cfg.snapshot_kimg
                kimg_snapshot = False
                if period is not None and self.nimg // round(period * 1000) > self.snapshot_index:
                    self.snapshot_index = self.nimg // round(period * 1000)
                    kimg_snapshot = True
                if self.nimg >= self.tick_start_nimg + phase.tick_kimg * 1000 or done:
                    # The one host read of the tick's statistics; it also waits for the tick's GPU work,
                    # so sec_per_tick below is the real time (nothing else syncs within a tick).
                    means = self._tick_stats(phase)
                    self._gather_rank_logs()
                    t0 = time.time()
                    self.tick += 1
                    now = time.time()
                    sec_per_tick = now - tick_time
                    timed_kimg = (self.nimg - timed_nimg) / 1000
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    stats = {
                        "tick": self.tick,
                        "kimg": self.nimg / 1000,
                        "lod": phase.lod,
                        "resolution": phase.resolution,
                        "minibatch": phase.minibatch,
                        "time_s": self.elapsed_before + (now - self._t_start),
                        "sec_per_tick": sec_per_tick,
                        "sec_per_kimg": sec_per_tick / max(timed_kimg, 1e-9),
                        "images_per_s": timed_kimg * 1000 / max(sec_per_tick, 1e-9),
                        "maintenance_s": maintenance_s,
                        "peak_mem_gib": peak_memory_gib(self.device.type),
                        **means,
                    }
                    # Before the checkpoint, so it stores the NEXT tick's start (a resumed run then
                    # ticks where the uninterrupted one does).
                    self.tick_start_nimg = self.nimg
                    self.feedback.tick(stats)
                    self._check_weights(phase)
                    snap = cfg.snapshot_ticks and self.tick % cfg.snapshot_ticks == 0
                    if snap or done or kimg_snapshot:
                        self.checkpoint(phase)
                    elif cfg.image_snapshot_ticks and self.tick % cfg.image_snapshot_ticks == 0:
                        self.write_grid(phase.lod)
                    if cfg.metrics and cfg.metrics_every_ticks and self.tick % cfg.metrics_every_ticks == 0:
                        self.run_metrics(phase)
                    if self.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(self.device)
                    tick_time, timed_nimg = time.time(), self.nimg
                    maintenance_s = tick_time - t0
                    if ticks_left is not None:
                        ticks_left -= 1
                        if ticks_left <= 0:
                            break
                elif kimg_snapshot:
                    self._check_weights(phase)
                    self.checkpoint(phase)
            if self.nimg >= total_nimg:
                self.checkpoint(phase)
                self.feedback_log(
                    f"done: {self.nimg / 1000:.1f} kimg; last checkpoint {self.last_checkpoint}"
                )
        except DatasetError as exc:
            if not self.env.is_main:  # rank 0 cannot hear of it: this rank's own log keeps the reason
                self.data_log(f"rank {self.env.rank} stopped: {exc}")
            raise
        except KeyboardInterrupt:
            self.feedback_log(
                f"interrupted (Ctrl-C) at kimg {self.nimg / 1000:.3f}; the newest checkpoint is "
                f"{self.last_checkpoint}; continue with --resume latest"
            )
            raise
        finally:
            restore_signals()
            self.feedback.close()
            if self.loader is not None:
                self.loader.close()
        return self.last_checkpoint

    def _phase_before(self, phase: TrainingPhase) -> TrainingPhase:
        """The schedule the last round trained at (for an end-of-phase checkpoint's meta: its lod is
        the lod of the weights). Reading the schedule at ``nimg - 1`` instead would give the next
        phase's lod whenever a round ends past the phase boundary."""
        return self._round_phase if self._round_phase is not None else self.phase_at(max(self.nimg - 1, 0))

    # ---- signals ------------------------------------------------------------------------------
    def _catch_sigterm(self):
        """Turn SIGTERM into a flag the loop reads between rounds; returns the undo function. A second
        SIGTERM while stopping restores the default action (immediate exit)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # signal handlers can only be installed from the main thread
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, _frame):
            if self._stop_signal is not None:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            self._stop_signal = signum

        signal.signal(signal.SIGTERM, handler)
        return lambda: signal.signal(signal.SIGTERM, previous)

    def _stop_if_signalled(self, phase: TrainingPhase) -> None:
        """After a round: if any rank got SIGTERM, every rank checkpoints and raises Interrupted."""
        signum = self._stop_signal or 0
        if self.env.enabled:  # agree on it (one tiny all-reduce per round), so all ranks stop together
            signum = int(dist_utils.all_reduce_max(torch.tensor([signum], device=self.device), self.env))
        if not signum:
            return
        path = self.checkpoint(phase)
        name = signal.Signals(signum).name
        message = (
            f"interrupted by {name} at kimg {self.nimg / 1000:.3f}: wrote checkpoint {path}; continue with "
            "--resume latest (or --resume auto)"
        )
        self.feedback_log(message)
        raise Interrupted(message, 128 + signum)

    def _train_round(self, phase: TrainingPhase) -> None:
        """``minibatch_repeats`` x (``d_repeats`` D steps + EMA, one G step), eager or CUDA-graph replayed
        (graphs.PhaseRunner). No host read: the statistics are summed on the device."""
        cfg = self.config
        runner = self._phase_runner(phase)
        runner.set_alpha(phase.alpha)  # the fade weight of this round, written into the device tensor
        for _ in range(cfg.minibatch_repeats):
            for _ in range(cfg.d_repeats):
                runner.d_step(self._next_reals(phase))
                self.nimg += phase.minibatch
            runner.g_step()

    def _read_stats(self, *, reset: bool = True) -> dict[str, float]:
        """Mean statistics since the last reset, averaged over ranks (one host read)."""
        stats = self._step_stats()
        if stats.empty:
            return {}
        means = dist_utils.all_reduce_mean(stats.means(), self.env).tolist()  # [K]
        if reset:
            stats.reset()
        return dict(zip(stats.names, means, strict=True))

    def _tick_stats(self, phase: TrainingPhase) -> dict[str, float]:
        """The tick's mean statistics; stops on a non-finite one (fp16: checked per round instead)."""
        if self.policy.use_loss_scaler:
            rounds = getattr(self, "_fp16_rounds", [])
            self._fp16_rounds = []
            names = sorted({k for r in rounds for k in r})
            return {k: sum(r[k] for r in rounds) / len(rounds) for k in names}
        means = self._read_stats()
        self._check_round(means, phase, None)
        return means

    def _check_pending_stats(self, phase: TrainingPhase) -> None:
        """Before a checkpoint between ticks: stop if a statistic since the last tick is non-finite."""
        if not self.policy.use_loss_scaler:
            self._check_round(self._read_stats(reset=False), phase, None)

    def _check_fp16_round(self, phase: TrainingPhase, scale_before: float) -> None:
        """fp16: this round's statistics (a loss-scale overflow is not an error), kept for the tick."""
        stats = self._read_stats()
        self._check_round(stats, phase, scale_before)
        if not hasattr(self, "_fp16_rounds"):
            self._fp16_rounds = []
        self._fp16_rounds.append(stats)

    def _check_round(self, stats: dict[str, float], phase: TrainingPhase, scale_before: float | None) -> None:
        bad = [k for k, v in stats.items() if not math.isfinite(v)]
        if not bad:
            return
        if scale_before is not None and self.scaler_D.get_scale() < scale_before:
            # fp16: a loss-scale overflow; GradScaler skipped those steps. Only weights can tell.
            self._check_weights(phase)
            self.feedback_log(f"fp16 loss-scale overflow in {', '.join(bad)}: steps skipped, scale lowered")
            return
        names = {"d_loss": "D loss", "g_loss": "G loss", "gp": "gradient penalty"}
        self._stop_non_finite(", ".join(f"{names.get(k, k)} ({stats[k]})" for k in bad), phase)

    # ---- metrics ------------------------------------------------------------------------------
    def run_metrics(self, phase: TrainingPhase) -> dict[str, Any] | None:
        """The configured metrics on G_ema at the current lod (rank 0); the result goes to the logs."""
        if not self.env.is_main:
            return None
        from fastprogan.metrics import evaluate

        G, lod, device = self.G_ema, phase.lod, self.device

        @torch.no_grad()
        def generate_fn(n: int, generator: torch.Generator) -> torch.Tensor:
            z = torch.randn(n, G.latent_size, generator=generator).to(device)
            return G(z, lod).float()

        result = evaluate(
            generate_fn,
            self._metric_reals(phase.resolution, 2 * self.config.metrics_images),
            metrics=self.config.metrics,
            num_images=self.config.metrics_images,
            seed=self.config.seed,
            device=device,
        )
        self.feedback.metrics(self.nimg / 1000, result)
        return result

    def _metric_reals(self, resolution: int, count: int) -> Iterator[torch.Tensor]:
        from fastprogan.data import ImageLoader

        loader = ImageLoader(
            self.dataset, resolution, 64, seed=self.config.seed + 1, drop_last=False, **self._integrity()
        )
        try:
            yielded = 0
            while yielded < count:
                batch = next(loader)[: count - yielded]
                yielded += batch.shape[0]
                yield batch
        finally:
            loader.close()
