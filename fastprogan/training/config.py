"""All training settings in one dataclass: preset defaults, overrides, validation, JSON round trip.

A run's config is printed at start and saved as ``config.json`` (and inside every checkpoint). Defaults
are the official ProGAN values (PROGAN_SPEC.md section 2); a preset overrides some of them, and the
CLI overrides any field (``--set field=value`` or the explicit flags).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from fastprogan.training.errors import ConfigError
from fastprogan.training.presets import PRESETS

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
IMPLS = ("auto", "ref", "triton")  # the networks' op implementations (fastprogan.ops impl=)
LOSSES = ("wgan-gp", "lsgan")
BATCH_MODES = ("preset", "auto")
CUDA_GRAPH_MODES = ("auto", "on", "off")
KNOWN_METRICS = ("swd", "msssim", "fid")

# The official tick length (kimg) by resolution.
OFFICIAL_TICK_KIMG = {4: 160, 8: 140, 16: 120, 32: 100, 64: 80, 128: 60, 256: 40, 512: 20, 1024: 10}


@dataclass
class TrainingConfig:
    """Every setting of a training run. Field comments give the official value where it differs."""

    preset: str = "quickstart"
    data: str | None = None  # dataset path; None: the embedded default dataset
    resolution: int | None = None  # final resolution; None: the dataset's largest
    # Networks (PROGAN_SPEC.md section 1).
    fmap_base: int = 8192
    fmap_decay: float = 1.0
    fmap_max: int = 512
    latent_size: int | None = None  # None: nf(0), 512 for the paper's widths
    mbstd_group_size: int = 4
    # Schedule.
    num_gpus: int = 1  # the preset's GPU count: the minibatch is rounded down to a multiple of it
    total_kimg: float = 12000.0
    lod_training_kimg: float = 600.0
    lod_transition_kimg: float = 600.0
    lod_initial_resolution: int = 4
    minibatch_base: int = 16
    minibatch_dict: dict[int, int] = field(default_factory=dict)
    lr_base: float = 0.001
    lr_dict: dict[int, float] = field(default_factory=dict)
    tick_kimg_base: float = 160.0
    tick_kimg_dict: dict[int, float] = field(default_factory=lambda: dict(OFFICIAL_TICK_KIMG))
    minibatch_repeats: int = 4
    d_repeats: int = 1
    batch: str = "preset"  # "auto": largest per-GPU batch that fits (CUDA only)
    # Loss and optimiser.
    loss: str = "wgan-gp"
    gp_lambda: float = 10.0
    gp_target: float = 1.0
    drift: float = 0.001  # epsilon * D(real)**2
    adam_beta1: float = 0.0
    adam_beta2: float = 0.99
    adam_eps: float = 1e-8
    reset_opt_for_new_lod: bool = True
    ema_beta: float = 0.999
    mirror: bool = True
    # Precision and hardware.
    precision: str = "auto"  # auto: bf16 on CUDA with bf16 and on CPUs with native bf16, else fp32
    allow_tf32: bool = False
    impl: str = "auto"  # ops: auto (Triton on CUDA), ref (plain torch), triton (CPU: TRITON_INTERPRET=1)
    cuda_graphs: str = "auto"  # replay each phase's steps as CUDA graphs: auto (CUDA fp32/bf16), on, off
    num_workers: int | str = "auto"  # data loader threads; auto: fastprogan.data.loader.auto_num_workers()
    cpu_threads: int = 0  # torch intra-op threads when training on CPU; 0: torch's default
    # Data integrity (docs/datasets.md): check each image's xxh3_64 against the manifest the first time
    # the process reads it; a corrupt image stops the run, or with skip_bad is replaced and logged.
    verify_data: bool = True
    skip_bad: bool = False
    seed: int = 1000
    # Snapshots and feedback.
    snapshot_ticks: int = 10
    snapshot_kimg: float | None = None
    image_snapshot_ticks: int = 1
    keep: int = 5
    grid_images: int = 32
    metrics: tuple[str, ...] = ()
    metrics_every_ticks: int = 0
    metrics_images: int = 10000

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TrainingConfig:
        """The preset's settings over the defaults, then ``overrides``; validated."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        values = {**PRESETS[name], **overrides, "preset": name}
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        """Build from plain values (as in config.json: int dict keys may arrive as strings)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}")
        coerced = {k: _coerce(k, v) for k, v in values.items()}
        config = cls(**coerced)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (dict keys as ints, tuples as lists)."""
        d = dataclasses.asdict(self)
        d["metrics"] = list(self.metrics)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **changes: Any) -> TrainingConfig:
        return TrainingConfig.from_dict({**self.to_dict(), **changes})

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.resolution is not None:
            _check_pow2("resolution", self.resolution)
        _check_pow2("lod_initial_resolution", self.lod_initial_resolution)
        if self.impl not in IMPLS:
            raise ConfigError(f"impl must be one of {', '.join(IMPLS)}, got {self.impl!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.cuda_graphs not in CUDA_GRAPH_MODES:
            raise ConfigError(
                f"cuda_graphs must be one of {', '.join(CUDA_GRAPH_MODES)}, got {self.cuda_graphs!r}"
            )
        if self.batch not in BATCH_MODES:
            raise ConfigError(f"batch must be 'preset' or 'auto', got {self.batch!r}")
        bad = sorted(set(self.metrics) - set(KNOWN_METRICS))
        if bad:
            raise ConfigError(f"unknown metric(s) {', '.join(bad)}; choose from {', '.join(KNOWN_METRICS)}")
        for name in ("minibatch_base", "minibatch_repeats", "d_repeats", "num_gpus", "keep", "grid_images"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("fmap_base", "fmap_max"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for res, mb in self.minibatch_dict.items():
            _check_pow2("minibatch_dict key", res)
            if mb < 1:
                raise ConfigError(f"minibatch_dict[{res}] must be >= 1, got {mb}")
        for name in ("total_kimg", "lod_training_kimg", "lod_transition_kimg", "tick_kimg_base"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
        if self.lod_training_kimg + self.lod_transition_kimg <= 0:
            raise ConfigError("lod_training_kimg + lod_transition_kimg must be > 0")
        if self.tick_kimg_base <= 0 or any(v <= 0 for v in self.tick_kimg_dict.values()):
            raise ConfigError("tick lengths (tick_kimg_base, tick_kimg_dict) must be > 0")
        if not (self.lr_base > 0 and all(v > 0 for v in self.lr_dict.values())):
            raise ConfigError("learning rates (lr_base, lr_dict) must be > 0")
        if not 0 <= self.ema_beta < 1:
            raise ConfigError(f"ema_beta must be in [0, 1), got {self.ema_beta}")
        if self.snapshot_kimg is not None and self.snapshot_kimg <= 0:
            raise ConfigError(f"snapshot_kimg must be > 0, got {self.snapshot_kimg}")
        if self.snapshot_ticks < 0 or self.image_snapshot_ticks < 0 or self.metrics_every_ticks < 0:
            raise ConfigError("snapshot_ticks, image_snapshot_ticks and metrics_every_ticks must be >= 0")
        if self.mbstd_group_size < 0:
            raise ConfigError(f"mbstd_group_size must be >= 0, got {self.mbstd_group_size}")
        if self.cpu_threads < 0:
            raise ConfigError(f"cpu_threads must be >= 0, got {self.cpu_threads}")
        if self.num_workers != "auto" and (not isinstance(self.num_workers, int) or self.num_workers < 0):
            raise ConfigError(
                f"config field num_workers must be an int >= 0 or 'auto', got {self.num_workers!r}"
            )
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")


def _check_pow2(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 4 or value & (value - 1):
        raise ConfigError(f"{name} must be a power of two >= 4, got {value!r}")


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainingConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Check one field's value against its annotation; convert JSON shapes (string keys, lists)."""
    kind = _FIELD_TYPES[name]
    if kind == "int | str":  # a count, or the string "auto" (num_workers)
        if value == "auto":
            return value
        if isinstance(value, bool) or not str(value).isdigit():
            raise ConfigError(f"config field {name} must be an int >= 0 or 'auto', got {value!r}")
        return int(value)
    try:
        if value is None:
            if "None" not in kind:
                raise TypeError("None")
            return None
        if kind.startswith("dict[int"):
            if not isinstance(value, dict):
                raise TypeError("not a dict")
            cast = float if "float" in kind else int
            return {int(k): cast(v) for k, v in value.items()}
        if kind.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(x).strip().lower() for x in items if str(x).strip())
        if kind.startswith("bool"):
            if not isinstance(value, bool):
                raise TypeError("not a bool")
            return value
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError("not an int")
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise TypeError("not a number")
            return float(value)
        if kind.startswith("str"):
            if not isinstance(value, str):
                raise TypeError("not a string")
            return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config field {name} must be {kind}, got {value!r}") from exc
    return value


def parse_set_option(text: str) -> tuple[str, Any]:
    """``key=value`` from ``--set``: value parsed as JSON when it is (numbers, true, {...}), else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    if key not in _FIELD_TYPES:
        raise ConfigError(f"--set: unknown config field {key!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value
