"""Frames/s of one world's weights under several samplers, in one process, rounds alternating between them.

    python benchmarks/measure_samplers.py [ROUNDS]

The CarRacing world at 4 and 3 evenly spaced Euler steps and at its shipped 2 steps (levels 1 -> 1/3 -> 0), bf16,
batch 1, the median step of each round (``WorldModel.step``, the decode included); this VM's speed drifts by tens of
percent within minutes, so only rounds taken side by side are compared.
"""

from __future__ import annotations

import statistics
import sys

import torch

from worldsim.bench import alternating_rates
from worldsim.engine import WorldModel

SAMPLERS = {"4 steps": {"steps": 4, "shift": 1.0}, "3 steps": {"steps": 3, "shift": 1.0}, "2 steps, shift 0.5": {}}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    wm = WorldModel.from_pretrained("carracing", dtype=torch.bfloat16)
    shipped = {"steps": wm.sampler_config.steps, "shift": wm.sampler_config.shift}
    variants = {name: (lambda s=sampler: wm.set_sampler(**(s or shipped))) for name, sampler in SAMPLERS.items()}
    fps = alternating_rates(wm, variants, rounds=rounds, steps=120)
    base = statistics.median(fps["4 steps"])
    for name, runs in fps.items():
        med = statistics.median(runs)
        print(f"{name}: median {med:.1f} fps (x{med / base:.2f} of 4 steps), rounds {[round(x, 1) for x in runs]}")


if __name__ == "__main__":
    main()
