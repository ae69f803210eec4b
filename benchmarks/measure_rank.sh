#!/usr/bin/env bash
# Rank the PushT policy family in the PushT world beside the real env: the issue's measurement.
#   bash benchmarks/measure_rank.sh                       # 10 policies x 50 episodes, 300 steps (~? min on CPU-2)
#   EPISODES=10 bash benchmarks/measure_rank.sh           # a quick look
# Eight of the ten never produced any of the world's training data (all but pusht_bc and random).
set -euo pipefail
WORLD=${WORLD:-pusht}
EPISODES=${EPISODES:-50}
HORIZON=${HORIZON:-300}
OUT=${OUT:-benchmarks/measurements/rank_pusht.json}
SEED=${SEED:-100000}   # real episodes from seeds no recording used (the data's seeds are 0-399, 10000+, 20000+)
POLICIES=${POLICIES:-pusht_planner_px,pusht_planner_px_good,pusht_planner_px_shaky,pusht_planner_px_greedy,pusht_planner_px_weak,pusht_pixels,pusht_bc,pusht_bc_small,pusht_bc_noisy,random}
mkdir -p "$(dirname "$OUT")"
/usr/bin/time -v worldsim rank --world "$WORLD" --policies "$POLICIES" --episodes "$EPISODES" --horizon "$HORIZON" \
    --seed "$SEED" --real --json "$OUT" --video-dir "${VIDEOS:-rank_videos}" 2> >(grep -E "Elapsed|Maximum resident" >&2)
