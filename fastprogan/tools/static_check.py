"""Static GPU check: compile every launchable Triton config for real GPUs, without a GPU.

    python -m fastprogan.tools.static_check [--arch 80 90] [--dtype fp32 ...] [--modules M ...] [--jobs N] [--csv PATH]

For every entry of the kernel modules' ``launch_configs()`` (the same tables the launch helpers pick
from, so the check cannot drift from what runs) and every arch, ``triton.compile`` runs the whole
pipeline to PTX and cubin for ``GPUTarget("cuda", arch, 32)`` with TRITON_INTERPRET=0 (no driver
needed); ``ptxas -v`` (the one Triton itself uses, from the triton wheel) reports registers and spills;
``metadata.shared`` the shared memory per block. The table lists kernel, config, arch, registers,
spill bytes, shared memory and an occupancy estimate; the exit status is 1 on any compile error, any
spill, shared memory above the per-block limit (166,912 B on sm_80, 232,448 B on sm_90), more than
1024 threads per block, or registers x threads above the SM's 65,536-register file (a block that
cannot be resident at all).

The tables are the only source of launch configs: :func:`record_launches` hooks Triton's launch entry
point (JIT and interpreter) and :func:`off_table` lists every recorded launch whose kernel, constexprs,
num_warps or pointer dtypes match no entry, so a launch that bypasses the tables fails the tests
(tests/tools/test_launch_configs.py).

Not enumerated: Triton's JIT value specialisations (an int argument equal to 1 becomes a constant,
multiples of 16 get an alignment hint); they only remove instructions from the generic variant
checked here. ``--oversized`` adds two deliberately unfit configs to show that the check rejects them:
a spilling one (a 512 x 64 fp32 pixel-norm tile on 4 warps) and a 2,048-thread block (the flat
bias + lrelu kernel on 64 warps).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

SMEM_LIMIT = {80: 166_912, 90: 232_448}  # bytes of dynamic shared memory per block
SMEM_PER_SM = {80: 167_936, 90: 233_472}
REGS_PER_SM = 65_536
MAX_WARPS_PER_SM = {80: 64, 90: 64}
MAX_BLOCKS_PER_SM = 32
MAX_THREADS_PER_BLOCK = 1024
KERNEL_MODULES = ("bias_act", "minibatch_stddev", "conv2d_bias_act")


@dataclass
class Result:
    label: str
    arch: int
    num_warps: int = 4
    regs: int | None = None
    spill_bytes: int | None = None
    stack_bytes: int | None = None
    smem: int | None = None
    occupancy: float | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def problems(self) -> list[str]:
        return verdict(self)


def verdict(r: Result) -> list[str]:
    """Why a compiled config is unfit for launch on ``r.arch`` (empty list: fit)."""
    if r.error:
        return [f"compile error: {r.error}"]
    out = []
    if r.spill_bytes:
        out.append(f"spills {r.spill_bytes} B")
    if r.smem is not None and r.smem > SMEM_LIMIT[r.arch]:
        out.append(f"shared memory {r.smem} B > {SMEM_LIMIT[r.arch]} B per block")
    if r.regs is not None and r.regs > 255:
        out.append(f"{r.regs} registers > 255")
    threads = r.num_warps * 32
    if threads > MAX_THREADS_PER_BLOCK:
        out.append(f"{threads} threads per block > {MAX_THREADS_PER_BLOCK}")
    if r.regs is not None and r.regs * threads > REGS_PER_SM:
        out.append(f"{r.regs} registers x {threads} threads > the SM's {REGS_PER_SM}-register file")
    return out


def occupancy(arch: int, regs: int, num_warps: int, smem: int) -> float:
    """Estimated fraction of the SM's warp slots in use (registers allocated per warp in units of 256)."""
    regs_per_warp = -(-max(regs, 1) * 32 // 256) * 256
    blocks = min(
        MAX_BLOCKS_PER_SM,
        (REGS_PER_SM // regs_per_warp) // num_warps,
        MAX_WARPS_PER_SM[arch] // num_warps,
        SMEM_PER_SM[arch] // (smem + 1024),  # 1 KB per block reserved by the driver
    )
    return blocks * num_warps / MAX_WARPS_PER_SM[arch]


def _compile_mode() -> None:
    """Kernels must be imported as real JIT functions. Set before any kernel import of this process
    (and inherited by its workers); importing this module leaves the environment alone, so a test
    process running the interpreter is not affected."""
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, stated: no warning


def all_configs(oversized: bool = False, modules: tuple[str, ...] | None = None) -> list[dict]:
    """Every kernel module's ``launch_configs()`` (or only ``modules``), plus the oversized ones."""
    from fastprogan.ops._kernels import load_kernels

    configs = []
    for name in modules or KERNEL_MODULES:
        configs.extend(load_kernels(name).launch_configs())
    if oversized:
        bias_act = load_kernels("bias_act")
        base = next(
            c for c in bias_act.launch_configs() if c["kernel"] is bias_act.bias_act_pixel_norm_fwd_kernel
        )
        constexprs = dict(base["constexprs"], BLOCK_C=512, BLOCK_P=64, ONE_C_BLOCK=True)
        configs.append(dict(base, constexprs=constexprs, num_warps=4, oversized=True))
        flat = next(c for c in bias_act.launch_configs() if c["kernel"] is bias_act.bias_lrelu_fwd_kernel)
        configs.append(dict(flat, num_warps=64, oversized=True))  # 2,048 threads per block
    return configs


def label(cfg: dict) -> str:
    dtype = next(v for k, v in cfg["signature"].items() if k.endswith("ptr")).lstrip("*")
    consts = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in cfg["constexprs"].items())
    tag = ",OVERSIZED" if cfg.get("oversized") else ""
    return f"{cfg['kernel'].__name__}[{dtype},{consts},w{cfg['num_warps']}{tag}]"


def _ptxas_report(ptx: str, arch: int) -> tuple[int, int, int]:
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        run = subprocess.run(
            [get_ptxas(arch).path, "-v", f"--gpu-name={gpu}", path, "-o", os.path.join(tmp, "k.cubin")],
            capture_output=True,
            text=True,
        )
    text = run.stdout + run.stderr
    if run.returncode:
        raise RuntimeError(f"ptxas failed: {text.strip()[:500]}")
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    stack = re.search(r"(\d+) bytes stack frame", text)
    if not (regs and spills and stack):
        raise RuntimeError(f"could not parse ptxas -v output: {text.strip()[:500]}")
    return int(regs.group(1)), int(spills.group(1)) + int(spills.group(2)), int(stack.group(1))


def check_one(args: tuple[int, int, bool, tuple[str, ...] | None]) -> Result:
    """Compile config ``index`` of ``all_configs`` for ``arch`` (runs in a worker process)."""
    index, arch, oversized, modules = args
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    cfg = all_configs(oversized, modules)[index]
    result = Result(label(cfg), arch, num_warps=cfg["num_warps"])
    start = time.perf_counter()
    try:
        signature = dict(cfg["signature"], **{name: "constexpr" for name in cfg["constexprs"]})
        src = ASTSource(cfg["kernel"], signature, cfg["constexprs"])
        compiled = triton.compile(
            src,
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": cfg["num_warps"], "num_stages": cfg.get("num_stages", 1)},
        )
        result.smem = int(compiled.metadata.shared)
        result.regs, result.spill_bytes, result.stack_bytes = _ptxas_report(compiled.asm["ptx"], arch)
        if cfg["num_warps"] * 32 <= MAX_THREADS_PER_BLOCK:
            result.occupancy = occupancy(arch, result.regs, cfg["num_warps"], result.smem)
    except Exception as err:  # report every failure in the table, then fail the run
        result.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
    result.seconds = time.perf_counter() - start
    return result


def run_check(
    archs: list[int],
    dtypes: list[str] | None,
    match: str | None,
    oversized: bool,
    jobs: int,
    modules: tuple[str, ...] | None = None,
) -> list[Result]:
    configs = all_configs(oversized, modules)
    todo = []
    for i, cfg in enumerate(configs):
        name = label(cfg)
        if dtypes and not any(f"[{d}," in name for d in dtypes):
            continue
        if match and match not in name and not cfg.get("oversized"):
            continue
        todo.extend((i, arch, oversized, modules) for arch in archs)
    if jobs <= 1:
        return [check_one(t) for t in todo]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(check_one, todo))


# ----------------------------------------------------------------------------------------------------
# Launch recording: every launch must use a config of the tables above.

_PTR_DTYPES = {
    "float32": "*fp32",
    "float16": "*fp16",
    "bfloat16": "*bf16",
    "float64": "*fp64",
    "int32": "*i32",
}


@dataclass(frozen=True)
class Launch:
    """One recorded kernel launch: kernel, constexprs, num_warps and the pointer arguments' dtypes."""

    kernel: str
    constexprs: tuple[tuple[str, object], ...]
    num_warps: int
    pointers: tuple[tuple[str, str], ...]


def _kernel_id(kernel: object) -> str:
    fn = getattr(kernel, "fn", kernel)
    return f"{fn.__module__}.{fn.__name__}"


def _config_key(cfg: dict) -> tuple:
    pointers = tuple(sorted((k, v) for k, v in cfg["signature"].items() if v.startswith("*")))
    return (_kernel_id(cfg["kernel"]), tuple(sorted(cfg["constexprs"].items())), cfg["num_warps"], pointers)


def _launch_key(launch: Launch) -> tuple:
    return (launch.kernel, launch.constexprs, launch.num_warps, launch.pointers)


class record_launches:
    """Context manager: record every Triton kernel launch (JIT or interpreter) made inside it.

    ``with record_launches() as launches: ...`` leaves a list of :class:`Launch`. Hooks the ``run``
    method of Triton's JITFunction and InterpretedFunction (what ``kernel[grid](...)`` calls), so no
    launch escapes it, whichever helper made it.
    """

    def __enter__(self) -> list[Launch]:
        import torch
        from triton.runtime import interpreter, jit

        self.launches: list[Launch] = []
        self._saved = []
        for cls in (jit.JITFunction, interpreter.InterpretedFunction):
            original = cls.run
            self._saved.append((cls, original))

            def run(kernel, *args, grid, warmup, _original=original, **kwargs):
                if not warmup:
                    names = kernel.arg_names
                    bound = dict(zip(names, args))
                    bound.update({k: v for k, v in kwargs.items() if k in names})
                    constexprs = tuple(
                        sorted(
                            (k, v)
                            for k, v in kwargs.items()
                            if k in names and not isinstance(v, torch.Tensor)
                        )
                    )
                    pointers = tuple(
                        sorted(
                            (k, _PTR_DTYPES.get(str(v.dtype).removeprefix("torch."), str(v.dtype)))
                            for k, v in bound.items()
                            if isinstance(v, torch.Tensor)
                        )
                    )
                    self.launches.append(
                        Launch(_kernel_id(kernel), constexprs, int(kwargs.get("num_warps", 4)), pointers)
                    )
                return _original(kernel, *args, grid=grid, warmup=warmup, **kwargs)

            cls.run = run
        return self.launches

    def __exit__(self, *exc) -> None:
        for cls, original in self._saved:
            cls.run = original


def off_table(launches: list[Launch], configs: list[dict] | None = None) -> list[Launch]:
    """The launches whose (kernel, constexprs, num_warps, pointer dtypes) match no entry of
    ``configs`` (default: every kernel module's ``launch_configs()``, what this check compiles)."""
    table = {_config_key(c) for c in (all_configs() if configs is None else configs)}
    return [launch for launch in launches if _launch_key(launch) not in table]


def markdown_table(results: list[Result]) -> str:
    lines = [
        "| kernel / config | arch | regs | spill B | smem B | est. occupancy | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        occ = "" if r.occupancy is None else f"{r.occupancy:.0%}"
        ok = "ok" if not r.problems else "FAIL: " + "; ".join(r.problems)
        lines.append(
            f"| {r.label} | sm_{r.arch} | {r.regs if r.regs is not None else ''} | "
            f"{r.spill_bytes if r.spill_bytes is not None else ''} | {r.smem if r.smem is not None else ''} | "
            f"{occ} | {ok} |"
        )
    return "\n".join(lines)


def summary(results: list[Result]) -> str:
    """Max registers / spills / shared memory per kernel and arch."""
    rows: dict[tuple[str, int], list[Result]] = {}
    for r in results:
        rows.setdefault((r.label.split("[")[0], r.arch), []).append(r)
    lines = [
        "| kernel | arch | configs | max regs | max spill B | max smem B | min est. occupancy |",
        "|---|---|---|---|---|---|---|",
    ]
    for (kernel, arch), rs in sorted(rows.items()):
        ok = [r for r in rs if r.regs is not None]
        lines.append(
            f"| {kernel} | sm_{arch} | {len(rs)} | {max((r.regs for r in ok), default='')} | "
            f"{max((r.spill_bytes for r in ok), default='')} | {max((r.smem for r in ok), default='')} | "
            f"{min((r.occupancy for r in ok), default=0):.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], choices=sorted(SMEM_LIMIT))
    parser.add_argument("--dtype", nargs="+", choices=["fp32", "fp16", "bf16"], help="only these dtypes")
    parser.add_argument("--match", help="only configs whose label contains this text")
    parser.add_argument("--modules", nargs="+", choices=KERNEL_MODULES, help="only these kernel modules")
    parser.add_argument("--oversized", action="store_true", help="add a deliberately spilling config")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--full-table", action="store_true", help="print every config, not just the summary")
    args = parser.parse_args(argv)
    _compile_mode()
    start = time.perf_counter()
    modules = tuple(args.modules) if args.modules else None
    results = run_check(args.arch, args.dtype, args.match, args.oversized, args.jobs, modules)
    failed = [r for r in results if r.problems]
    print(markdown_table(results) if args.full_table or failed else summary(results))
    if args.full_table:
        print()
        print(summary(results))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["config", "arch", "regs", "spill_bytes", "stack_bytes", "smem", "occupancy", "verdict"]
            )
            for r in results:
                writer.writerow(
                    [
                        r.label,
                        r.arch,
                        r.regs,
                        r.spill_bytes,
                        r.stack_bytes,
                        r.smem,
                        r.occupancy,
                        "; ".join(r.problems) or "ok",
                    ]
                )
    print(
        f"\n{len(results)} compiles ({len({r.label for r in results})} configs x {len(args.arch)} archs) in "
        f"{time.perf_counter() - start:.0f} s: {len(failed)} failed"
    )
    for r in failed:
        print(f"FAIL {r.label} sm_{r.arch}: {'; '.join(r.problems)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
