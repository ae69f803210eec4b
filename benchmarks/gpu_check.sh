#!/usr/bin/env bash
# The one run for the day a GPU is lent (issue 38). On one CUDA GPU, in under 10 minutes, it installs what it needs;
# runs the self-check of the fused Triton kernels and the CUDA-graph passes against the PyTorch path
# (benchmarks/check_gpu.py selfcheck) and the GPU tests while a 2-minute `train world --preset gpu` smoke run trains
# on data the shipped world dreams; runs `worldsim bench --device cuda` in bf16 at batch 1, 32 and 256, eager and
# --compile (frames/s, and MFU against the measured matmul peak); and writes every number to gpu_check.json and a
# README-ready table to gpu_check.md.
#
#   bash benchmarks/gpu_check.sh --dry-run         # what it would do, on any machine (exits 0, writes nothing)
#   bash benchmarks/gpu_check.sh                   # the run: results in $OUT if set, else ./gpu_check/
#   bash benchmarks/gpu_check.sh --fetch-wheels    # on a machine with network: the wheels for an offline one, in .whl/
#
# A GPU machine with network installs from PyPI. One without (the device tool's): first, here, run it with
# --fetch-wheels (PYVER=3.12 by default: the GPU machine's Python), then the device tool's run with carry [".whl"],
# timeout_s 600 and the command `bash benchmarks/gpu_check.sh`. Each part has a time limit of its own, cut to what is
# left of the whole run's budget (BUDGET_S, 570 s), so one that hangs cannot take the others' time; a part that fails
# or runs out of time shows as such in the report, and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    --fetch-wheels) FETCH=1 ;;
    "") ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run | --fetch-wheels]" >&2; exit 2 ;;
esac

DIR=${OUT:-$PWD/gpu_check}
WORK=${TMPDIR:-/tmp}/worldsim_gpu_check
WHEELS=.whl
BUDGET_S=${BUDGET_S:-570}
REPORT_S=30  # kept back for the report, whatever the parts take
# What worldsim needs beyond torch and triton (the device image has those two), its train extra and pytest.
DEPS="setuptools einops numpy gymnasium h5py safetensors huggingface_hub tqdm tyro pillow imageio tensorboard pytest"
PY=python3
export PYTHONUNBUFFERED=1 PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
BENCH="$PY -m worldsim bench --checkpoint carracing --device cuda --precision bf16 --frames 120 --recompute-context 16"

if [ "${FETCH:-0}" = 1 ]; then
    mkdir -p "$WHEELS"
    $PY -m pip download -q --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
        --platform any -d "$WHEELS" $DEPS || exit 1
    du -sh "$WHEELS"
    exit 0
fi

START=$(date +%s)
left() { echo $((START + BUDGET_S - REPORT_S - $(date +%s))); }

# part NAME LIMIT_S COMMAND: run COMMAND (a shell string) for at most LIMIT_S seconds, or what is left of the budget.
part() {
    local name=$1 limit=$2 command=$3
    if [ "$DRY" = 1 ]; then
        printf '%-26s up to %3s s: %s\n' "$name" "$limit" "$(tr -s ' ' <<< "$command")"
        return 0
    fi
    local budget
    budget=$(left)
    [ "$budget" -lt "$limit" ] && limit=$budget
    if [ "$limit" -lt 5 ]; then
        echo "== $name: skipped, out of time" | tee -a "$DIR/gpu_check.log"
        return 1
    fi
    echo "== $name (up to $limit s)" | tee -a "$DIR/gpu_check.log"
    local t0 rc
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" bash -c "$command"
    rc=$?
    echo "== $name: exit $rc after $(($(date +%s) - t0)) s$([ $rc = 124 ] && echo ', out of time')" \
        | tee -a "$DIR/gpu_check.log"
    return $rc
}

NO_GPU="gpu_check: torch sees no CUDA GPU here (bash benchmarks/gpu_check.sh --dry-run lists what the run does)"
if [ "$DRY" = 1 ]; then
    echo "gpu_check (dry run): results to $DIR, scratch in $WORK; the parts in order, each cut to what is left" \
        "of $BUDGET_S s (the training runs in the background beside selfcheck and tests):"
    echo "first: torch must see a CUDA GPU, else one line and exit 2 before anything is installed or written"
else
    $PY -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2> /dev/null || { echo "$NO_GPU" >&2; exit 2; }
    mkdir -p "$DIR" "$WORK"
    : > "$DIR/gpu_check.log"
fi

# 1. Install: from the carried wheels where there are some, else from PyPI; worldsim itself from this checkout.
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    SOURCE="--no-index --find-links $WHEELS"
else
    SOURCE=""
fi
[ "$DRY" = 1 ] && echo "install from: ${SOURCE:-PyPI (no wheels in $WHEELS/)}"
part install 120 "( $PY -m pip install -q $SOURCE $DEPS && \
    $PY -m pip install -q $SOURCE --no-deps --no-build-isolation -e . && \
    $PY -c 'import tyro, gymnasium, h5py, tensorboard, pytest, worldsim.cli' ) > '$DIR/install.log' 2>&1" \
    || { tail -5 "$DIR/install.log" >&2; echo "gpu_check: the install failed; nothing else can run" >&2; exit 1; }

# 2. What the GPU is, for the report.
part gpu 20 "nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader > '$DIR/machine.txt' || \
    $PY -c 'import torch; print(torch.cuda.get_device_name())' > '$DIR/machine.txt'"

# 3. The training smoke run in the background; beside it the self-check (fp32 and bf16 eager: the fused kernels; bf16
#    compiled: the CUDA graphs) and the GPU tests. The bench waits for all three: its timings need the GPU to itself.
TRAIN="$PY benchmarks/check_gpu.py dream-data '$WORK/dream.h5' && \
    $PY -m worldsim train world --preset gpu --device cuda --data '$WORK/dream.h5' --autoencoder carracing \
    --out '$WORK/train' --max-minutes 2 --json > '$DIR/train.json'"
if [ "$DRY" = 1 ]; then
    part "train (in the background)" 210 "$TRAIN"
else
    rm -rf "$WORK/train" "$WORK/dream.h5"
    part "train (in the background)" 210 "$TRAIN" > "$DIR/train.log" 2>&1 &
    TRAIN_PID=$!
fi
part selfcheck 150 "$PY benchmarks/check_gpu.py selfcheck --json '$DIR/selfcheck.json' > '$DIR/selfcheck.log' 2>&1"
part tests 150 "$PY -m pytest tests/test_cuda.py tests/test_selfcheck.py tests/test_triton_kernels.py \
    -q -p no:cacheprovider > '$DIR/tests.log' 2>&1"
[ "$DRY" = 1 ] || wait "$TRAIN_PID"

# 4. The bench: batch 1, 32, 256 in bf16, eager then compiled (CUDA graphs; their compiling is timed apart).
for mode in eager compiled; do
    flag=$([ $mode = compiled ] && echo " --compile")
    limit=$([ $mode = compiled ] && echo 90 || echo 45)
    for batch in 1 32 256; do
        out="$DIR/bench_${mode}_b$batch"
        part "bench $mode batch $batch" "$limit" "$BENCH --batch $batch$flag --json > '$out.json' 2> '$out.log'"
    done
done

# 5. The report: gpu_check.json (every number) and gpu_check.md (the README table), also on stdout.
REPORT_S=0
part report 30 "$PY benchmarks/check_gpu.py report '$DIR'"
[ "$DRY" = 1 ] || echo "gpu_check: $(($(date +%s) - START)) s in all; $DIR/gpu_check.json, $DIR/gpu_check.md"
