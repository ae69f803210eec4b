"""Frames/s of a bf16 world whose decoder runs in fp32 (as before) vs in bf16 (as now), batch 1 and batch 32.

    python benchmarks/measure_decode.py [world]

Alternating rounds on one loaded world (the decoder cast back and forth), median step time of each round.
"""

from __future__ import annotations

import statistics
import sys

import torch

from worldsim.bench import alternating_rates
from worldsim.engine import WorldModel

STEPS = {1: 150, 32: 25}


def main() -> None:
    world = sys.argv[1] if len(sys.argv) > 1 else "carracing"
    wm = WorldModel.from_pretrained(world, dtype=torch.bfloat16)
    for batch, steps in STEPS.items():
        variants = {name: (lambda d=dtype: wm.autoencoder.decoder.to(d)) for name, dtype in
                    (("fp32", torch.float32), ("bf16", torch.bfloat16))}  # fmt: skip
        fps = alternating_rates(wm, variants, batch=batch, steps=steps)
        for name, runs in fps.items():
            print(f"batch {batch}, decoder {name}: {[round(x, 1) for x in runs]}, median {statistics.median(runs):.1f}")
        print(f"batch {batch} ratio {statistics.median(fps['bf16']) / statistics.median(fps['fp32']):.3f}")


if __name__ == "__main__":
    main()
