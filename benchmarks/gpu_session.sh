#!/usr/bin/env bash
# One session on a lent GPU, run as it is:  bash benchmarks/gpu_session.sh [BUDGET_S]
#
# 1. installs this checkout into the preinstalled environment, offline (pip --no-deps
#    --no-build-isolation -e .; falls back to PYTHONPATH if pip cannot);
# 2. runs `fastprogan bench`: the correctness smoke first, then the training iteration, the per-op
#    rows and the dispatch table within BUDGET_S seconds (default 420);
# 3. leaves benchmarks/results/<device slug>/ ready to commit (results.csv, report.md, PNGs, env.json,
#    dispatch_table.json) and copies the dispatch table to fastprogan/ops/dispatch_tables/<slug>.json.
# Exit status: 0; 1 if the correctness smoke failed (report.md lists the failed rows first);
# 2 bad arguments; 3 no CUDA device.
# GPU_SESSION_DRY_RUN=1 rehearses the script on a CPU: no install (PYTHONPATH instead), the bench's
# --device cpu --quick, results into benchmarks/results/dry-run/ (not to be committed), no table copy.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1
BUDGET_S="${1:-${BUDGET_S:-420}}"
PY="${PYTHON:-python}"
DRY="${GPU_SESSION_DRY_RUN:-0}"

step() { echo; echo "== [gpu_session $(date -u +%H:%M:%S)] $*"; }

step "environment"
GPU_SESSION_DRY_RUN="$DRY" "$PY" - <<'PYEOF' || exit 3
import os, sys, torch
try:
    import triton
    tv = triton.__version__
except ImportError:
    tv = "not installed"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, triton {tv}, CUDA {torch.version.cuda}")
if os.environ.get("GPU_SESSION_DRY_RUN") == "1":
    print("dry run on the CPU (GPU_SESSION_DRY_RUN=1)")
elif not torch.cuda.is_available():
    sys.exit("gpu_session: torch sees no CUDA device; nothing to measure")
else:
    print(f"device: {torch.cuda.get_device_name()}")
PYEOF

if [ "$DRY" = "1" ]; then
    step "dry run: no install, PYTHONPATH=$PWD"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    SLUG="dry-run"
    EXTRA=(--device cpu --quick)
else
    step "install (offline): pip install --no-deps --no-build-isolation -e ."
    if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e .; then
        echo "gpu_session: pip install failed; running from the checkout with PYTHONPATH=$PWD instead"
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
    SLUG="$("$PY" -c 'import torch; from fastprogan.ops.dispatch_table import device_slug; print(device_slug(torch.cuda.get_device_name()))')" || exit 3
    EXTRA=()
fi
OUT="benchmarks/results/$SLUG"
step "bench: smoke, then train / ops / dispatch within ${BUDGET_S}s -> $OUT"
"$PY" -m fastprogan bench --out "$OUT" --budget-s "$BUDGET_S" ${EXTRA[@]+"${EXTRA[@]}"}
STATUS=$?

if [ "$DRY" != "1" ] && [ -f "$OUT/dispatch_table.json" ]; then
    cp "$OUT/dispatch_table.json" "fastprogan/ops/dispatch_tables/$SLUG.json"
    step "dispatch table copied to fastprogan/ops/dispatch_tables/$SLUG.json (impl='auto' loads it on this GPU)"
fi
step "files in $OUT:"
ls -l "$OUT"
case "$STATUS" in
    0) step "done: commit $OUT and fastprogan/ops/dispatch_tables/$SLUG.json" ;;
    1) step "THE CORRECTNESS SMOKE FAILED: see the Failures section at the top of $OUT/report.md" ;;
    *) step "the bench exited with status $STATUS" ;;
esac
exit "$STATUS"
