#!/usr/bin/env bash
# Issue 15's GPU numbers in one run on a lent device machine (about 6 minutes on an H100; no test needs a GPU):
# `worldsim bench --device cuda` at batch 1 and 256, eager and --compile (CUDA graphs for the passes), then the
# fused Triton kernels and the compiled passes checked against PyTorch on the GPU (docs/check_gpu.py).
#
# The device image has torch and triton but not every dependency: first, here, in the repo's root,
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl gymnasium farama-notifications tyro docstring-parser typeguard shtab
# then call the device tool's run with carry [".whl"], timeout_s 600 and the command `bash docs/measure_gpu.sh`.
# Everything goes to $OUT/gpu.log (or /tmp/gpu.log) and stdout. Each part has its own time limit (about 470 s in
# all), so one that hangs cannot take the others' time.
set -uo pipefail
LOG=${OUT:-/tmp}/gpu.log
export PYTHONUNBUFFERED=1
{
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
    python3 -c "import tyro, gymnasium, worldsim.cli, worldsim.assets; print('imports ok')" || exit 1
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
    for compile in --no-compile --compile; do
        for batch in 1 256; do
            echo "== bench --batch $batch $compile"
            timeout "$([ "$compile" = --compile ] && echo 110 || echo 60)" python3 -m worldsim.cli bench \
                --checkpoint carracing --device cuda --precision bf16 --batch "$batch" --frames 200 \
                --recompute-context 16 "$compile" --json
        done
    done
    echo "== check_gpu"
    timeout 120 python3 docs/check_gpu.py
} 2>&1 | tee "$LOG"
