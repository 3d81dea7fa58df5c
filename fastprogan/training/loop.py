"""The training loop: the official ProGAN recipe, resolution-native, resumable bit-exactly.

Per round (the schedule is re-read every ``minibatch_repeats`` minibatches, as the official code does)::

    phase = schedule_at(config, nimg)                 # lod, resolution, minibatch, lr
    if (floor(lod), ceil(lod)) changed: reset both Adam states   (checkpoint first: end of a phase)
    repeat minibatch_repeats times:
        repeat d_repeats times: D step (penalty), G_ema update, nimg += minibatch
        G step
    tick bookkeeping: log line, stats, grids, checkpoints, metrics

Randomness: every rank draws the latents and the penalty's mixing factors u for the GLOBAL minibatch
from one shared CPU generator and keeps its own slice (rank r takes samples r, r + W, ...: the same
samples the data loader gives rank r), so a W-process run sees the same numbers as a 1-process run.
Mirror coins come from a per-rank CPU generator. All generator states, the global RNGs and the data
loader position are in every checkpoint; checkpoints are taken between rounds only, so a resumed run
continues exactly where the interrupted one was.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from fastprogan.training import checkpoint as ckpt
from fastprogan.training import distributed as dist_utils
from fastprogan.training.config import TrainingConfig
from fastprogan.training.ema import make_ema, update_ema
from fastprogan.training.errors import ConfigError, NonFiniteError
from fastprogan.training.feedback import Feedback, peak_memory_gib, write_json
from fastprogan.training.images import render, save_grid
from fastprogan.training.networks import build_discriminator, build_generator
from fastprogan.training.precision import configure_tf32, describe_precision, resolve_precision
from fastprogan.training.schedule import TrainingPhase, schedule_at
from fastprogan.training.steps import StepContext, discriminator_step, generator_step

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
    }
)


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
    if config.resolution is None:
        config = config.replace(resolution=resolution)
    return dataset, config


class Trainer:
    """One training run in ``run_dir``. ``Trainer(run_dir, config).run()``; to resume, pass
    ``resume="latest"`` or a checkpoint path (the run's config then comes from the checkpoint, with
    ``overrides`` of the RESUME_OVERRIDABLE fields applied)."""

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
    ) -> None:
        self.run_dir = Path(run_dir)
        self.env = env or dist_utils.env_from_torchrun()
        self.device = dist_utils.device_for(self.env, device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device}: CUDA is not available")

        state = None
        if resume is not None:
            path = ckpt.resolve_resume(resume, self.run_dir)
            state = ckpt.load_checkpoint(path)
            changed = sorted(set(overrides or {}) - RESUME_OVERRIDABLE)
            if changed:
                raise ConfigError(
                    f"cannot change {', '.join(changed)} when resuming (the run's config comes from "
                    f"{path.name}); only {', '.join(sorted(RESUME_OVERRIDABLE))} may change"
                )
            config = TrainingConfig.from_dict({**state["config"], **(overrides or {})})
            self.resumed_from: Path | None = path
        else:
            if config is None:
                raise ConfigError("a config is needed for a new run")
            if overrides:
                config = config.replace(**overrides)
            self.resumed_from = None
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

        if self.device.type == "cpu" and cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        self.policy = resolve_precision(cfg.precision, self.device)
        if self.device.type == "cuda":
            configure_tf32(cfg.allow_tf32)
        dist_utils.init_process_group(self.env, self.device)

        # Networks: identical on every rank (same seed, then rank 0's broadcast).
        torch.manual_seed(cfg.seed)
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
            # Shared by all ranks: global-batch latents and mixing factors, sliced per rank.
            "shared": torch.Generator().manual_seed(cfg.seed),
            # Per rank: mirror coins.
            "mirror": torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919 * (self.env.rank + 1)),
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
        if state is not None:
            self._load_state(state)

        self.progress = progress
        self.feedback: Feedback | None = None  # opened by run()

    # ---- setup helpers ------------------------------------------------------------------------
    def _make_optimizer(self, module: torch.nn.Module) -> torch.optim.Adam:
        cfg = self.config
        return torch.optim.Adam(
            module.parameters(), lr=cfg.lr_base, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps
        )

    def _reset_optimizers(self) -> None:
        """Forget both Adam states (moments and step counts), as the official trainer does per phase."""
        for opt in (self.opt_G, self.opt_D):
            opt.state.clear()

    def _load_state(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.scaler_G.load_state_dict(state["scaler_G"])
        self.scaler_D.load_state_dict(state["scaler_D"])
        p = state["progress"]
        self.nimg, self.tick, self.tick_start_nimg = int(p["nimg"]), int(p["tick"]), int(p["tick_start_nimg"])
        self.prev_lod_key = tuple(p["prev_lod_key"]) if p["prev_lod_key"] is not None else None
        self.elapsed_before = float(p["elapsed_s"])
        self.snapshot_index = int(p["snapshot_index"])
        self.auto_batch = {int(k): int(v) for k, v in state["auto_batch"].items()}
        self._loader_state = state["loader"]
        rng = state["rng"]
        if len(rng) != self.env.world_size:
            raise ConfigError(
                f"checkpoint was written by {len(rng)} process(es), this job has {self.env.world_size}: "
                "resume with the same number of processes"
            )
        ckpt.restore_rng_state(rng[self.env.rank], self.generators)
        self.last_checkpoint_nimg = self.nimg

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
        # Every rank must use the same size: take the smallest.
        if self.env.enabled:
            found = min(dist_utils.gather_objects(found, self.env))
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
        )

    def _next_reals(self, phase: TrainingPhase) -> torch.Tensor:
        from fastprogan.data import fade_reals, prepare_reals

        batch = next(self.loader)  # uint8 [B, C, R, R]
        reals = prepare_reals(
            batch, self.device, mirror=self.config.mirror, generator=self.generators["mirror"]
        )
        return fade_reals(reals, phase.alpha)  # [B, C, R, R] in [-1, 1]

    def _draw_shared(self, phase: TrainingPhase) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents [B, latent] and mixing factors [B, 1, 1, 1] for this rank, cut from the global draw."""
        gen, n = self.generators["shared"], phase.minibatch
        z = torch.randn(n, self.G.latent_size, generator=gen)  # [N_global, latent]
        u = torch.rand(n, 1, 1, 1, generator=gen)  # [N_global, 1, 1, 1]
        r, w = self.env.rank, self.env.world_size
        return z[r::w].to(self.device), u[r::w].to(self.device)

    def _draw_latents(self, phase: TrainingPhase) -> torch.Tensor:
        z = torch.randn(phase.minibatch, self.G.latent_size, generator=self.generators["shared"])
        return z[self.env.rank :: self.env.world_size].to(self.device)

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
        save_grid(images, [self.run_dir / name, self.run_dir / "grid-latest.png"])

    def write_reals_grid(self) -> None:
        if not self.env.is_main:
            return
        n = min(self.config.grid_images, self.dataset.num_images)
        reals = torch.from_numpy(self.dataset.images(self.config.resolution)[:n].copy())  # uint8 [n, C, R, R]
        save_grid(reals, [self.run_dir / "reals.png"])

    # ---- checkpoints --------------------------------------------------------------------------
    def checkpoint(self, phase: TrainingPhase) -> Path | None:
        """Write a checkpoint (collective: every rank calls it; rank 0 writes) and a grid."""
        if self.nimg == self.last_checkpoint_nimg:
            return self.last_checkpoint
        rng = dist_utils.gather_objects(ckpt.capture_rng_state(self.generators), self.env)
        path = None
        if self.env.is_main:
            state = {
                "config": self.config.to_dict(),
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
                    "elapsed_s": self.elapsed_before + (time.time() - self._t_start),
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
                "rng": rng,
            }
            path = ckpt.save_checkpoint(state, self.run_dir, self.nimg, keep=self.config.keep)
            self.feedback_log(f"checkpoint {path.name} (kimg {self.nimg / 1000:.1f}, lod {phase.lod:.2f})")
            self.write_grid(phase.lod)
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
            self.run_dir, enabled=self.env.is_main, progress=self.progress, total_kimg=cfg.total_kimg
        )
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_temporaries(self.run_dir)
            # The config as given, plus what "auto" resolved to on this machine.
            write_json(
                self.run_dir / "config.json", {**cfg.to_dict(), "resolved_precision": self.policy.name}
            )
        self.feedback.open_tensorboard()
        how = f"resumed from {self.resumed_from}" if self.resumed_from else "new run"
        self.feedback_log(
            f"fastprogan train: {how} in {self.run_dir}; device {self.device}, "
            f"precision {describe_precision(cfg.precision, self.policy)}, "
            f"{self.env.world_size} process(es); {self.num_channels} channel(s), dataset {cfg.data} "
            f"({self.dataset.num_images} images)"
        )
        self.feedback_log("config: " + cfg.to_json().replace("\n", "\n  "))
        if cfg.num_gpus != self.env.world_size:
            self.feedback_log(
                f"note: preset {cfg.preset} is tuned for {cfg.num_gpus} GPU(s); this job has "
                f"{self.env.world_size} process(es), each trains on minibatch / {self.env.world_size}"
            )
        if self.nimg == 0:
            self.write_reals_grid()
        total_nimg = round(cfg.total_kimg * 1000)
        ticks_left = stop_after_ticks
        tick_time = time.time()
        maintenance_s = 0.0
        sums: dict[str, float] = {}
        rounds = 0
        phase = self.phase_at(self.nimg)
        try:
            while self.nimg < total_nimg:
                phase = self.phase_at(self.nimg)
                key = phase.lod_key
                if self.prev_lod_key is not None and key != self.prev_lod_key:
                    self.checkpoint(self._phase_before(phase))  # end of a phase
                if cfg.reset_opt_for_new_lod and key != self.prev_lod_key:
                    self._reset_optimizers()
                self.prev_lod_key = key
                self._ensure_loader(phase)
                for opt in (self.opt_G, self.opt_D):
                    for group in opt.param_groups:
                        group["lr"] = phase.lr

                scale_before = self.scaler_D.get_scale() if self.policy.use_loss_scaler else None
                round_stats = self._train_round(phase)
                self._check_round(round_stats, phase, scale_before)
                for k, v in round_stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                rounds += 1
                self.feedback.advance(self.nimg / 1000)

                done = self.nimg >= total_nimg
                period = cfg.snapshot_kimg
                kimg_snapshot = False
                if period is not None and self.nimg // round(period * 1000) > self.snapshot_index:
                    self.snapshot_index = self.nimg // round(period * 1000)
                    kimg_snapshot = True
                if self.nimg >= self.tick_start_nimg + phase.tick_kimg * 1000 or done:
                    t0 = time.time()
                    self.tick += 1
                    now = time.time()
                    sec_per_tick = now - tick_time
                    tick_kimg = (self.nimg - self.tick_start_nimg) / 1000
                    means = {k: v / max(rounds, 1) for k, v in sums.items()}
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
                        "sec_per_kimg": sec_per_tick / max(tick_kimg, 1e-9),
                        "images_per_s": tick_kimg * 1000 / max(sec_per_tick, 1e-9),
                        "maintenance_s": maintenance_s,
                        "peak_mem_gib": peak_memory_gib(self.device.type),
                        **means,
                    }
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
                    self.tick_start_nimg = self.nimg
                    sums, rounds = {}, 0
                    tick_time = time.time()
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
        finally:
            self.feedback.close()
            if self.loader is not None:
                self.loader.close()
        return self.last_checkpoint

    def _phase_before(self, phase: TrainingPhase) -> TrainingPhase:
        """The schedule as the previous round saw it (for an end-of-phase checkpoint's meta)."""
        back = max(self.nimg - 1, 0)
        return self.phase_at(back)

    def _train_round(self, phase: TrainingPhase) -> dict[str, float]:
        """``minibatch_repeats`` x (``d_repeats`` D steps + EMA, one G step); mean stats (floats)."""
        cfg = self.config
        collected: dict[str, list[torch.Tensor]] = {}
        for _ in range(cfg.minibatch_repeats):
            for _ in range(cfg.d_repeats):
                reals = self._next_reals(phase)
                z, u = self._draw_shared(phase)
                for k, v in discriminator_step(self.ctx, reals, z, u, phase.lod).items():
                    collected.setdefault(k, []).append(v)
                if self.env.is_main:
                    update_ema(self.G_ema, self.G, cfg.ema_beta)
                self.nimg += phase.minibatch
            for k, v in generator_step(self.ctx, self._draw_latents(phase), phase.lod).items():
                collected.setdefault(k, []).append(v)
        names = sorted(collected)
        means = torch.stack([torch.stack(collected[k]).mean() for k in names])  # [K], one sync per round
        means = dist_utils.all_reduce_mean(means, self.env)
        return dict(zip(names, means.tolist(), strict=True))

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

        loader = ImageLoader(self.dataset, resolution, 64, seed=self.config.seed + 1, drop_last=False)
        try:
            yielded = 0
            while yielded < count:
                batch = next(loader)[: count - yielded]
                yielded += batch.shape[0]
                yield batch
        finally:
            loader.close()
