#!/usr/bin/env bash
# Issue 15's GPU numbers in one run on a lent device machine (a few minutes on an H100; no test needs a GPU):
# the fused Triton kernels and compiled CUDA-graph passes checked against PyTorch (docs/check_gpu.py), then
# `worldsim bench --device cuda` at batch 1 and 256, eager and --compile (CUDA graphs for the passes).
#
# The device image has torch and triton but not every dependency: first, here, in the repo's root,
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl gymnasium farama-notifications tyro docstring-parser typeguard shtab
# then call the device tool's run with carry [".whl"] and the command `bash docs/measure_gpu.sh`.
# Everything goes to $OUT/gpu.log (or /tmp/gpu.log) and stdout.
set -uo pipefail
LOG=${OUT:-/tmp}/gpu.log
export PYTHONUNBUFFERED=1
{
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
    timeout 240 python3 docs/check_gpu.py
    for batch in 1 256; do
        for compile in --no-compile --compile; do
            echo "== bench --batch $batch $compile"
            timeout 240 python3 -m worldsim.cli bench --checkpoint carracing --device cuda --precision bf16 \
                --batch "$batch" --frames 300 --recompute-context 16 "$compile" --json
        done
    done
} 2>&1 | tee "$LOG"
