"""Driver of the fault-injection test (tests/training/test_fault_injection.py).

``python -m tests.training.fault_driver DATASET WORKDIR SEED`` imports torch once, then forks each
training attempt as a child (so an attempt costs no interpreter start-up) and kills it with SIGKILL:

1. a reference run, uninterrupted (a checkpoint every tick, all kept); then the same command with
   ``--resume auto``, killed at random points (start-up, rounds, checkpoint and grid writes) until
   it has resumed 10 times from a checkpoint (mid-fade ones included), then run to the end: every
   checkpoint of the chain must be byte-identical to the reference's (so every resume was exact);
2. another run killed while a checkpoint is being written (the child's ``torch.save`` writes in slow
   chunks after dropping a marker; the kill lands at a random point of the write, the fsync, the
   rename, the pruning or the grid), 10 times: after each kill the newest ``checkpoint-*.pt`` loads;
3. each bad input of issue 12 item 4 through ``fastprogan.cli.main`` in a child: exit status 2, one
   stderr line, no traceback, no temporary file left.

Prints one JSON report on stdout. The parent never runs a torch op (forking after OpenMP started its
threads is unsafe).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

from fastprogan.cli import main
from fastprogan.data.create import level_filename
from fastprogan.training import checkpoint as ckpt
from fastprogan.training.errors import CheckpointError
from tests.training.helpers import tiny_cli_args

KILLS = 10


def _preload() -> None:
    """Import, once in the parent, what every child would import again: creating the first Adam
    imports torch._dynamo (seconds), and the first tick TensorBoard and PIL's PNG writer."""
    import importlib

    for name in (
        "torch._dynamo",
        "torch.utils.tensorboard",
        "PIL.PngImagePlugin",
        "fastprogan.training.loop",
        "fastprogan.training.steps",
        "fastprogan.training.networks",
        "fastprogan.data.loader",
    ):
        try:
            importlib.import_module(name)
        except ImportError:  # optional (tensorboard): the children then log that it is off
            pass


def _child(argv: list[str], log: Path, setup=None) -> int:
    """Fork ``main(argv)``; its stdout goes to ``log``, its stderr to ``log`` + ``.err``."""
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        for fd, path in ((1, log), (2, Path(f"{log}.err"))):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), fd)
        torch.set_num_threads(1)
        if setup is not None:
            setup()
        code = main(argv)
    except BaseException:  # the child reports through its log and exit status
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _kill(pid: int) -> int:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return _wait(pid)


def _terminate(pid: int, timeout_s: float = 60.0) -> int:
    """SIGTERM, then wait for the exit (SIGKILL only if it has not exited within ``timeout_s``)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return _wait(pid)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    return _kill(pid)


def _latest_state(run: Path) -> tuple[bool, float | None]:
    """(the newest checkpoint loads, its lod) — (True, None) when there is none yet."""
    found = ckpt.list_checkpoints(run)
    if not found:
        return True, None
    try:
        return True, float(ckpt.load_checkpoint(found[-1])["meta"]["lod"])
    except CheckpointError:
        return False, None


def _slow_writes(markers: Path):
    """In the child: torch.save writes in 16 slow chunks after dropping a marker."""

    def setup() -> None:
        import io

        real = torch.save

        def slow_save(obj, f, *args, **kwargs):
            buf = io.BytesIO()
            real(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            (markers / f"{os.getpid()}-{time.monotonic_ns()}").touch()
            step = -(-len(data) // 16)
            for i in range(0, len(data), step):
                f.write(data[i : i + step])
                time.sleep(0.01)

        torch.save = slow_save

    return setup


def _stats_lines(run: Path) -> int:
    try:
        return (run / "stats.jsonl").read_text().count("\n")
    except OSError:
        return 0


def _median_tick_s(run: Path) -> float:
    ticks = sorted(
        json.loads(line)["sec_per_tick"] for line in (run / "stats.jsonl").read_text().splitlines()
    )
    return ticks[len(ticks) // 2]


def exact_resumes(data: str, work: Path, rng: random.Random) -> dict:
    """kill -9 at random points; every checkpoint of the chain must equal the reference's bytes."""
    # 7 ticks: 4x4, the fade to 8x8 (3 ticks), 8x8; a checkpoint every tick, all kept.
    args = tiny_cli_args(data, snapshot_ticks=1, keep=100, total_kimg=0.448)
    ref, chain = work / "reference", work / "chain"
    report: dict = {"resumes": 0, "mid_fade_resumes": 0, "kills": 0, "corrupt_latest": 0}
    t0 = time.monotonic()
    assert _wait(_child(["train", "--out", str(ref), *args], work / "ref.log")) == 0, (
        work / "ref.log"
    ).read_text()
    report["reference_s"] = round(time.monotonic() - t0, 1)
    tick_s = _median_tick_s(ref)  # the kill window scales with this machine's speed right now
    argv = ["train", "--out", str(chain), "--resume", "auto", *args]
    while report["kills"] < 4 * KILLS and (report["resumes"] < KILLS or not report["mid_fade_resumes"]):
        _, lod = _latest_state(chain)
        if lod is not None:
            report["resumes"] += 1
            report["mid_fade_resumes"] += int(lod % 1 != 0)
        lines = _stats_lines(chain)
        pid = _child(argv, work / "chain.log")
        # Kill after 0 or 1 new tick, then a random part of a tick: with 0 the kill lands in the
        # start-up or the first round (no progress), with 1 in the next round, checkpoint or grid
        # (one tick of progress). Only 0 from two ticks before the end: the run must not finish here.
        near_end = ckpt.checkpoint_nimg(ckpt.list_checkpoints(chain)[-1]) >= 320 if lod is not None else False
        want = lines + (0 if near_end else rng.choice([0, 0, 1]))
        finished = False
        while _stats_lines(chain) < want:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                finished = True
                break
            time.sleep(0.002)
        if finished or os.waitpid(pid, os.WNOHANG)[0]:
            report["finished_early"] = True
            break
        time.sleep(rng.uniform(0.0, tick_s))
        _kill(pid)
        report["kills"] += 1
        ok, _ = _latest_state(chain)
        report["corrupt_latest"] += int(not ok)
    report["final_rc"] = _wait(_child(argv, work / "chain.log"))
    names_ref = [p.name for p in ckpt.list_checkpoints(ref)]
    names_chain = [p.name for p in ckpt.list_checkpoints(chain)]
    report["checkpoints"] = len(names_ref)
    report["same_names"] = names_ref == names_chain
    report["mismatched"] = [
        n for n in names_ref if n in names_chain and (ref / n).read_bytes() != (chain / n).read_bytes()
    ]
    report["leftover_tmp"] = [p.name for p in chain.iterdir() if ".tmp-" in p.name]
    report["chain_stderr"] = Path(f"{work / 'chain.log'}.err").read_text()[-600:]
    return report


def kills_during_writes(data: str, work: Path, rng: random.Random) -> dict:
    """kill -9 while a checkpoint is being written; the newest checkpoint-*.pt must always load."""
    # A long 4x4 phase (fast rounds) that never finishes here; a checkpoint every tick (every round).
    args = tiny_cli_args(data, snapshot_ticks=1, keep=3, total_kimg=100.0, lod_training_kimg=100.0)
    run, markers = work / "writes", work / "markers"
    markers.mkdir(parents=True)
    argv = ["train", "--out", str(run), "--resume", "auto", *args]
    report: dict = {"write_kills": 0, "corrupt_latest": 0, "resumed_after_write_kill": 0}
    for _ in range(KILLS):
        if ckpt.list_checkpoints(run):
            report["resumed_after_write_kill"] += 1
        seen = set(os.listdir(markers))
        pid = _child(argv, work / "writes.log", _slow_writes(markers))
        while not [m for m in os.listdir(markers) if m not in seen and m.startswith(f"{pid}-")]:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                report["child_died"] = Path(f"{work / 'writes.log'}.err").read_text()[-600:]
                return report
            time.sleep(0.002)
        # The write takes >= 0.16 s; then fsync, rename, fsync of the directory, pruning, the grid.
        time.sleep(rng.uniform(0.0, 0.3))
        _kill(pid)
        report["write_kills"] += 1
        ok, _ = _latest_state(run)
        report["corrupt_latest"] += int(not ok)
    # One more attempt, to the next checkpoint, proves the leftovers do not stop a resume; it ends with
    # SIGTERM (checkpoint, then exit), not SIGKILL, so a leftover can only be one the resume failed to
    # clear (a SIGKILL here could itself land mid-write and leave the temporary file it tests for).
    pid = _child(argv, work / "writes.log")
    target = _stats_lines(run) + 2
    while _stats_lines(run) < target and not os.waitpid(pid, os.WNOHANG)[0]:
        time.sleep(0.01)
    _terminate(pid)
    report["leftover_tmp"] = [p.name for p in run.iterdir() if ".checkpoint" in p.name and ".tmp-" in p.name]
    report["resumes_logged"] = (run / "log.txt").read_text().count("resumed from")
    return report


def bad_inputs(data: str, work: Path) -> list[dict]:
    bad = work / "bad"
    bad.mkdir()
    ds = bad / "ds"
    cases: dict[str, tuple[list[str], object]] = {}
    base = tiny_cli_args(data)

    def damaged(name: str, edit) -> str:
        copy = bad / name
        shutil.copytree(data, copy)
        edit(copy)
        return str(copy)

    cases["minibatch larger than the dataset"] = (tiny_cli_args(data, minibatch_dict={16: 4096}), None)
    cases["minibatch not divisible by the stddev group"] = (tiny_cli_args(data, minibatch_base=18), None)
    cases["missing level"] = (
        tiny_cli_args(damaged("missing", lambda d: (d / level_filename(8)).unlink())),
        None,
    )

    def truncate(d: Path) -> None:
        f = d / level_filename(16)
        f.write_bytes(f.read_bytes()[:1000])

    def corrupt_header(d: Path) -> None:
        f = d / level_filename(4)
        f.write_bytes(b"NOTNUMPY" + f.read_bytes()[8:])

    cases["truncated level"] = (tiny_cli_args(damaged("trunc", truncate)), None)
    cases["corrupt level header"] = (tiny_cli_args(damaged("header", corrupt_header)), None)
    blocker = bad / "a-file"
    blocker.write_text("x")
    cases["--out under a file"] = (base, blocker / "run")

    def full_disk() -> None:
        def no_space(obj, f, *a, **k):
            f.write(b"PK\x03\x04partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        torch.save = no_space

    text, js = bad / "text.pt", bad / "json.pt"
    text.write_text("just some text\n")
    js.write_text('{"G": 1}')
    del ds
    results = []
    runs = [
        (name, ["train", "--out", str(out or bad / f"run-{i}"), *a], None)
        for i, (name, (a, out)) in enumerate(cases.items())
    ]
    runs.append(
        ("disk full while writing a checkpoint", ["train", "--out", str(bad / "full"), *base], full_disk)
    )
    runs.append(("text file as checkpoint", ["train", "--out", str(bad / "r1"), "--resume", str(text)], None))
    runs.append(
        ("JSON file as checkpoint", ["generate", "--checkpoint", str(js), "--out", str(bad / "g")], None)
    )
    runs.append(
        (
            "generate --checkpoint missing.pt",
            ["generate", "--checkpoint", "missing.pt", "--out", str(bad / "g")],
            None,
        )
    )
    for i, (name, argv, setup) in enumerate(runs):
        log = bad / f"case-{i}.log"
        rc = _wait(_child(argv, log, setup))
        lines = Path(f"{log}.err").read_text().strip().splitlines()
        tmp = [str(p) for p in bad.rglob("*.tmp-*")]
        results.append({"case": name, "rc": rc, "lines": lines, "leftover_tmp": tmp})
    return results


def run(data: str, work: Path, seed: int) -> dict:
    t0 = time.monotonic()
    _preload()
    rng = random.Random(seed)
    report = {"exact": exact_resumes(data, work, rng), "writes": kills_during_writes(data, work, rng)}
    report["bad_inputs"] = bad_inputs(data, work)
    report["elapsed_s"] = round(time.monotonic() - t0, 1)
    return report


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))))
