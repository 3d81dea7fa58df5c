"""Checkpoints: one ``.pt`` file per snapshot, written atomically, loaded without running code.

Format: a dict written by ``torch.save`` and ALWAYS read with ``torch.load(weights_only=True)``, which
only rebuilds tensors and plain containers/numbers/strings and refuses anything else (a crafted pickle
whose ``__reduce__`` would run code is rejected before it runs). So everything inside is plain: state
dicts, optimizer and GradScaler states, the config as a dict, progress counters, the data loader
position (ints), and RNG states converted to tensors/lists (numpy's and Python's ``random`` included).

Keys: ``format``, ``version``, ``config``, ``G``, ``D``, ``G_ema``, ``opt_G``, ``opt_D``, ``scaler_G``,
``scaler_D``, ``progress`` (nimg, tick, ...), ``meta`` (lod, resolution, max_resolution, num_channels,
latent_size, kimg, pixelnorm_eps, precision), ``loader``, ``rng`` (a list with one entry per rank).
A checkpoint made by ``fastprogan import-official`` holds only ``config``, ``G``, ``D``, ``G_ema``,
``meta`` and ``origin``: resuming it fine-tunes those weights with fresh optimisers, counters and RNGs.

Atomicity: write ``.<name>.tmp-<pid>`` in the same directory, flush + fsync, ``os.replace`` onto the
final name, fsync the directory. A crash or SIGKILL at any point leaves the previous checkpoints intact
(the temporary file never matches ``checkpoint-*.pt``).
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastprogan.training.errors import CheckpointError, NonFiniteError

FORMAT = "fastprogan-checkpoint"
VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d{9,})\.pt$")


def checkpoint_name(nimg: int) -> str:
    """``checkpoint-<nimg, 9+ digits>.pt``: names sort in training order."""
    return f"checkpoint-{nimg:09d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The run's checkpoints, oldest first."""
    d = Path(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(spec: str, run_dir: str | os.PathLike, *, what: str = "--resume") -> Path:
    """``latest`` (the newest checkpoint in ``run_dir``), a run directory (its newest checkpoint) or a
    checkpoint file; CheckpointError naming ``what`` when missing."""
    if spec == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise CheckpointError(f"{what} latest: no checkpoint-*.pt in {run_dir}")
        return found[-1]
    path = Path(spec)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"{what} {spec}: no checkpoint-*.pt in that directory")
        return found[-1]
    if not path.is_file():
        raise CheckpointError(f"{what} {spec}: no such checkpoint file")
    return path


# ---- RNG state ----------------------------------------------------------------------------------


def capture_rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """This process's RNG states as weights_only-safe values (tensors, lists, numbers)."""
    # The legacy global numpy state is saved on purpose: user code and libraries may draw from it.
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": [int(py_version), list(py_internal), py_gauss],
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch_cpu"])
    npst = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for name, g in generators.items():
        g.set_state(state["generators"][name])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


# ---- writing ------------------------------------------------------------------------------------


def first_non_finite(named_state_dicts: dict[str, dict[str, torch.Tensor]]) -> str | None:
    """``"G weight blocks.8x8.conv1.weight"`` for the first NaN/Inf floating tensor, else None."""
    for net, sd in named_state_dicts.items():
        for key, t in sd.items():
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"{net} weight {key}"
    return None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], run_dir: str | os.PathLike, nimg: int, *, keep: int) -> Path:
    """Write ``state`` atomically as ``run_dir/checkpoint-<nimg>.pt``; keep the newest ``keep``.

    Refuses (NonFiniteError) to write networks with NaN/Inf weights, so the latest checkpoint is
    always a good one.
    """
    bad = first_non_finite({k: state[k] for k in ("G", "D", "G_ema") if k in state})
    if bad is not None:
        raise NonFiniteError(f"{bad} is non-finite; not writing a checkpoint at {nimg / 1000:.3f} kimg")
    directory = Path(run_dir)
    final = write_checkpoint_file(state, directory / checkpoint_name(nimg))
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def write_checkpoint_file(state: dict[str, Any], final: Path) -> Path:
    """``torch.save`` the format header + ``state`` to ``final`` atomically (temp file, fsync, rename)."""
    directory = final.parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{final.name}.tmp-{os.getpid()}"
    payload = {"format": FORMAT, "version": VERSION, **state}
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return final


def remove_stale_temporaries(run_dir: str | os.PathLike) -> None:
    """Delete ``.checkpoint-*.tmp-*`` files a killed writer left behind."""
    d = Path(run_dir)
    if d.is_dir():
        for p in d.glob(".checkpoint-*.pt.tmp-*"):
            p.unlink(missing_ok=True)


# ---- reading ------------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``; CheckpointError naming the file when it
    is missing, truncated, not ours, or contains anything but tensors and plain data."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{p}: refused to load: it holds more than tensors and plain data (weights_only=True "
            f"rejected it: {first})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{p}: unreadable or truncated checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a fastprogan checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{p}: checkpoint version {state.get('version')!r}, this build reads {VERSION}")
    return state


def load_generator(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict]:
    """G_ema from a checkpoint file (or a run directory: its newest) or an official release pickle
    (``karras2018iclr-*.pkl``, read without running code), in eval mode on ``device``, and its meta.

    meta: lod (float), resolution (active), max_resolution, num_channels, latent_size, kimg,
    pixelnorm_eps, precision, config (dict; None for an official pickle), path (the file read).
    """
    from fastprogan.models.official import OfficialFormatError, is_official_pickle
    from fastprogan.training.config import TrainingConfig
    from fastprogan.training.networks import build_generator

    path = resolve_resume(str(path), path, what="checkpoint")
    if is_official_pickle(path):
        from fastprogan.training.official import official_generator

        try:
            return official_generator(path, device)
        except OfficialFormatError as exc:
            raise CheckpointError(str(exc)) from None
    state = load_checkpoint(path)
    meta = dict(state["meta"])
    config = TrainingConfig.from_dict(state["config"])
    G = build_generator(config, meta["num_channels"], meta["pixelnorm_eps"])
    G.load_state_dict(state["G_ema"])
    G.requires_grad_(False)
    meta["config"] = config.to_dict()
    meta["path"] = str(path)
    return G.to(device).eval(), meta
