#!/usr/bin/env bash
# Does text-to-video pretraining buy data efficiency? Two CarRacing worlds trained the same way, one from the
# T2V backbone (runs/t2v, with captioned text-only clips mixed in so it keeps following text), one from scratch,
# evaluated open-loop on held-out episodes at several step counts.
#
# The learning rate is constant after a short warmup (--min-lr-ratio 1), so stopping at 250 steps and resuming to
# 500 and 1000 trains exactly as one run to 1000 would; each stop is evaluated. Run on an idle machine:
#   bash benchmarks/measure_transfer.sh                       # ~45 min on CPU-2
#   CHUNKS="500 1000 2000" bash benchmarks/measure_transfer.sh  # longer
set -euo pipefail
T2V=${T2V:-runs/t2v}
AE=${AE:-runs/ae_t2v}
DATA=${DATA:-data/carracing_mix.h5}
TEXT=${TEXT:-data/t2v/carracing.h5}
OUT=${OUT:-benchmarks/measurements/transfer}
CHUNKS=${CHUNKS:-"250 500 1000"}
EPISODES=${EPISODES:-220-229}
ARMS=${ARMS:-"t2v scratch"}
mkdir -p "$OUT"
common=(--data "$DATA" --autoencoder "$AE" --holdout 20 --warmup-steps 100 --min-lr-ratio 1.0 --save-minutes 5)
for arm in $ARMS; do
    run=runs/transfer_$arm
    extra=()
    [ "$arm" = t2v ] && extra=(--init "$T2V" --text-data "$TEXT")
    resume=()
    [ -d "$run/state" ] && resume=(--resume)
    for steps in $CHUNKS; do
        if [ -f "$OUT/${arm}_$steps.json" ]; then resume=(--resume); continue; fi
        worldsim train world "${common[@]}" "${extra[@]}" --out "$run" --steps "$steps" "${resume[@]}" --json \
            > "$OUT/${arm}_${steps}_train.json"
        resume=(--resume)
        worldsim eval --checkpoint "$run" --data "$DATA" --episodes "$EPISODES" --parts open_loop --horizons 4,16 \
            --json "$OUT/${arm}_$steps.json" > /dev/null
    done
done
python - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = []
for f in sorted(out.glob("*_[0-9]*.json")):
    if f.stem.endswith("_train"):
        continue
    arm, steps = f.stem.rsplit("_", 1)
    r = json.loads(f.read_text())
    rows.append((arm, int(steps), r.get("psnr_h16"), r.get("delta_psnr_h16")))
for arm, steps, p, d in sorted(rows):
    print(f"{arm:8s} {steps:6d} steps  psnr_h16 {p:.2f}  delta_psnr_h16 {d:.2f}")
EOF
