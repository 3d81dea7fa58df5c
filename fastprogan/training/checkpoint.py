"""Checkpoints: one ``.pt`` file per snapshot, written atomically, loaded without running code.

Format: a dict written by ``torch.save`` and ALWAYS read with ``torch.load(weights_only=True)``, which
only rebuilds tensors and plain containers/numbers/strings and refuses anything else (a crafted pickle
whose ``__reduce__`` would run code is rejected before it runs). So everything inside is plain: state
dicts, optimizer and GradScaler states, the config as a dict, progress counters, the data loader
position (ints), and RNG states converted to tensors/lists (numpy's and Python's ``random`` included).

Keys: ``format``, ``version``, ``config``, ``G``, ``D``, ``G_ema``, ``opt_G``, ``opt_D``, ``scaler_G``,
``scaler_D``, ``progress`` (nimg, tick, ...), ``meta`` (lod, resolution, max_resolution, num_channels,
latent_size, kimg, pixelnorm_eps, precision), ``loader`` (the GLOBAL batch-order position), ``rng``
(one dict: the RNG state of the job, the same on every rank; checkpoints of older builds hold a list
with one entry per rank, and a one-entry list still loads). ``meta.lod`` is the lod the weights were
trained at (the last round's), so ``generate`` and ``metrics`` render at the right resolution.

Byte-identical: the same command run twice on CPU writes byte-identical files (every RNG derives from
the config's seed, and no wall-clock value is stored: the elapsed training time lives in
``stats.jsonl``, see ``loop.py``). ``config.data`` is stored relative to the run directory when the
dataset is inside it (the default dataset, ``OUT/dataset``) and absolute otherwise, so a run directory
can be moved or copied and resumed from any working directory.
A checkpoint made by ``fastprogan import-official`` holds only ``config``, ``G``, ``D``, ``G_ema``,
``meta`` and ``origin``: resuming it fine-tunes those weights with fresh optimisers, counters and RNGs.

Atomicity: write ``.<name>.tmp-<pid>`` in the same directory, flush + fsync, ``os.replace`` onto the
final name, fsync the directory. A crash or SIGKILL at any point leaves the previous checkpoints intact
(the temporary file never matches ``checkpoint-*.pt``). A failed write (full disk, unwritable
directory) removes the temporary file and raises OutputError naming the file and the fix.

Pruning (keep the newest K) only considers checkpoints at or below the one just written: a run's
nimg only grows, so a newer-named file is never one this run wrote and is never deleted by it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastprogan.training.atomic import write_atomically
from fastprogan.training.errors import CheckpointError, NonFiniteError, output_error

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


def checkpoint_nimg(path: str | os.PathLike) -> int:
    """The nimg in a ``checkpoint-<nimg>.pt`` name (-1 when the name is not one)."""
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else -1


def resolve_resume(spec: str, run_dir: str | os.PathLike, *, what: str = "--resume") -> Path | None:
    """``latest`` (the newest checkpoint in ``run_dir``), ``auto`` (the same, or None when there is
    none: start a new run), a run directory (its newest checkpoint) or a checkpoint file;
    CheckpointError naming ``what`` when missing."""
    if spec == "auto":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
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


def rng_state_of(rng: Any, path: object) -> dict[str, Any]:
    """The job's RNG state from a checkpoint's ``rng`` (a dict; older builds: a list per rank)."""
    if isinstance(rng, dict):
        return rng
    if isinstance(rng, list) and len(rng) == 1:
        return rng[0]
    count = len(rng) if isinstance(rng, list) else "?"
    raise CheckpointError(
        f"{path}: written by an older fastprogan with per-process RNG states ({count} processes); "
        "this build stores one global state and cannot continue it exactly: resume it with the build "
        "that wrote it, or start a new run"
    )


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
        # The device each generator draws on: a state only continues on a generator of the same kind.
        "generator_devices": {name: g.device.type for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


# Bytes of a generator's state by kind (torch's CPU Mersenne Twister; CUDA Philox: seed + offset): how a
# checkpoint without ``generator_devices`` (written before that entry) tells which kind it came from.
_STATE_BYTES = {5056: "cpu", 16: "cuda"}


def reseed_from_state(saved: torch.Tensor) -> int:
    """A seed determined by a saved generator state (the first 63 bits of its SHA-256): the same
    checkpoint always gives the same continuation."""
    digest = hashlib.sha256(saved.detach().cpu().contiguous().numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _restore_generator(
    name: str, g: torch.Generator, saved: torch.Tensor, saved_device: str | None, path: object
) -> str | None:
    """Set ``g`` to ``saved``; where the state belongs to another kind of generator, re-seed ``g`` from it
    and return the warning line (None when restored exactly)."""
    if saved_device is None:
        saved_device = _STATE_BYTES.get(saved.numel())
    same_kind = saved_device == g.device.type if saved_device is not None else True
    if same_kind and saved.numel() == g.get_state().numel():
        g.set_state(saved)
        return None
    seed = reseed_from_state(saved)
    g.manual_seed(seed)
    kind = saved_device or f"{saved.numel()}-byte"
    return (
        f"warning: {path}: the {name!r} generator's saved state is a {kind} generator's, this run draws "
        f"it on {g.device.type} (checkpoints from before the device-side draws, or another device): "
        f"re-seeded from that state (seed {seed}); every other RNG is restored exactly, but the "
        "continuation is not bit-identical to an uninterrupted run"
    )


def restore_rng_state(
    state: dict[str, Any], generators: dict[str, torch.Generator], path: object = "checkpoint"
) -> list[str]:
    """Inverse of :func:`capture_rng_state`; returns the warning lines (empty when everything was
    restored exactly).

    A generator whose saved state belongs to another kind of generator (a checkpoint written before
    the shared latent generator moved to the training device holds a CPU state; a CUDA run cannot take
    it, and its numbers could not be continued on the device anyway) is re-seeded deterministically
    from that state, with one warning line naming ``path``: the run goes on, reproducibly, but is not
    bit-identical to an uninterrupted run. A generator missing from the checkpoint raises
    :class:`CheckpointError` naming ``path``.
    """
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
    saved, devices = state["generators"], state.get("generator_devices", {})
    missing = sorted(set(generators) - set(saved))
    if missing:
        raise CheckpointError(
            f"{path}: no saved state for the RNG generator(s) {', '.join(missing)} (it holds "
            f"{', '.join(sorted(saved)) or 'none'}): written by another fastprogan build; resume it with "
            "that build, or start a new run"
        )
    warnings = []
    for name, g in generators.items():
        note = _restore_generator(name, g, saved[name], devices.get(name), path)
        if note is not None:
            warnings.append(note)
    if "torch_cuda" in state and torch.cuda.is_available():
        # Per device; a job resumed on a node with fewer GPUs restores the ones it has.
        for index, device_state in enumerate(state["torch_cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, index)
    return warnings


# ---- writing ------------------------------------------------------------------------------------


def first_non_finite(named_state_dicts: dict[str, dict[str, torch.Tensor]]) -> str | None:
    """``"G weight blocks.8x8.conv1.weight"`` for the first NaN/Inf floating tensor, else None."""
    for net, sd in named_state_dicts.items():
        for key, t in sd.items():
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"{net} weight {key}"
    return None


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
    prune_checkpoints(directory, nimg, keep)
    return final


def write_checkpoint_file(state: dict[str, Any], final: Path) -> Path:
    """``torch.save`` the format header + ``state`` to ``final`` atomically (temp file, fsync, rename);
    a failed write (full disk, unwritable folder) raises OutputError naming the file and leaves no
    temporary file behind."""
    payload = _canonical({"format": FORMAT, "version": VERSION, **state})
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(final, exc) from None

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(payload, f)

    return write_atomically(final, write, durable=True)


def _canonical(obj: Any) -> Any:
    """A copy of ``obj`` whose pickle bytes depend only on its values: fresh containers (nothing
    shared) and interned strings (equal strings are one object). Pickle memoizes by object identity,
    so without this a resumed run (strings from torch.load) and an uninterrupted one (interned
    literals) write different bytes for equal checkpoints."""
    if isinstance(obj, dict):
        kind = OrderedDict if isinstance(obj, OrderedDict) else dict  # state dicts are OrderedDicts
        out = kind((_canonical(k), _canonical(v)) for k, v in obj.items())
        metadata = getattr(obj, "_metadata", None)  # nn.Module.state_dict()'s per-module versions
        if metadata is not None:
            out._metadata = _canonical(metadata)
        return out
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_canonical(v) for v in obj)
    if type(obj) is str:
        return sys.intern(obj)
    return obj


def prune_checkpoints(run_dir: str | os.PathLike, nimg: int, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints at or below ``nimg``; returns the deleted ones.

    Files named above ``nimg`` are left alone: they cannot have been written by the run at ``nimg``
    (its nimg only grows), so pruning never deletes a checkpoint of the current run for them.
    """
    mine = [p for p in list_checkpoints(run_dir) if checkpoint_nimg(p) <= nimg]
    doomed = mine[:-keep] if keep > 0 else mine
    for old in doomed:
        old.unlink(missing_ok=True)
    return doomed


def remove_stale_temporaries(run_dir: str | os.PathLike) -> None:
    """Delete the ``.<name>.tmp-<pid>`` files a killed writer left behind (checkpoints, grids, JSON)."""
    d = Path(run_dir)
    if d.is_dir():
        for pattern in (".checkpoint-*.pt.tmp-*", ".*.png.tmp-*", ".*.json.tmp-*", ".write-test.tmp-*"):
            for p in d.glob(pattern):
                p.unlink(missing_ok=True)


# ---- reading ------------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``; CheckpointError naming the file when it
    is missing, truncated, not ours, or contains anything but tensors and plain data."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    _check_file_kind(p)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc).strip()
        if "weights only load failed" not in text.lower():
            raise CheckpointError(
                f"{p}: not a fastprogan checkpoint (corrupt or foreign pickle data)"
            ) from None
        # The message of torch's refusal names the offending global on a line of its own.
        detail = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise CheckpointError(
            f"{p}: refused to load: it holds more than tensors and plain data (weights_only=True "
            f"rejected it{': ' + detail if detail else ''})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{p}: unreadable or truncated checkpoint ({type(exc).__name__}: {first})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{p}: not a fastprogan checkpoint (a torch file without the fastprogan format tag)"
        )
    if state.get("version") != VERSION:
        raise CheckpointError(f"{p}: checkpoint version {state.get('version')!r}, this build reads {VERSION}")
    return state


def _check_file_kind(p: Path) -> None:
    """CheckpointError unless ``p`` starts like a torch.save file (zip, or the legacy pickle format).

    Without this, a text file renamed ``.pt`` fails inside torch.load with a bare KeyError and a JSON
    file with the misleading weights_only security refusal.
    """
    with open(p, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return
    if not head:
        raise CheckpointError(f"{p}: empty file, not a checkpoint")
    stripped = head.lstrip()
    kind = "JSON" if stripped[:1] in (b"{", b"[") else "text" if _is_text(head) else "some other format"
    raise CheckpointError(
        f"{p}: not a fastprogan checkpoint (the file is {kind}, not a torch.save file); pass a "
        "checkpoint-*.pt written by fastprogan train"
    )


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def load_generator(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, what: str = "checkpoint"
) -> tuple[torch.nn.Module, dict]:
    """G_ema from a checkpoint file (or a run directory: its newest) or an official release pickle
    (``karras2018iclr-*.pkl``, read without running code), in eval mode on ``device``, and its meta.

    meta: lod (float), resolution (active), max_resolution, num_channels, latent_size, kimg,
    pixelnorm_eps, precision, config (dict; None for an official pickle), path (the file read).
    """
    from fastprogan.models.official import OfficialFormatError, is_official_pickle
    from fastprogan.training.config import TrainingConfig
    from fastprogan.training.networks import build_generator

    spec = str(path)
    path = resolve_resume(spec, path, what=what)
    if path is None:  # "auto" in a directory without checkpoints
        raise CheckpointError(f"{what} {spec}: no checkpoint-*.pt found")
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
