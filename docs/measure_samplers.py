"""Frames/s of one world's weights under several samplers, in one process, rounds alternating between them.

    python docs/measure_samplers.py [ROUNDS]

The CarRacing world at 4 and 3 evenly spaced Euler steps and at its shipped 2 steps (levels 1 -> 1/3 -> 0), bf16,
batch 1, the median step of each round (``WorldModel.step``, the decode included); this VM's speed drifts by tens of
percent within minutes, so only rounds taken side by side are compared.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import torch

from worldsim.engine import WorldModel

STEPS, WARMUP = 120, 10
SAMPLERS = {"4 steps": {"steps": 4, "shift": 1.0}, "3 steps": {"steps": 3, "shift": 1.0}, "2 steps, shift 0.5": {}}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    wm = WorldModel.from_pretrained("carracing", dtype=torch.bfloat16)
    shipped = {"steps": wm.sampler_config.steps, "shift": wm.sampler_config.shift}
    space = wm.action_space
    space.seed(0)
    fps: dict[str, list[float]] = {name: [] for name in SAMPLERS}
    for _ in range(rounds):
        for name, sampler in SAMPLERS.items():
            wm.set_sampler(**(sampler or shipped))
            wm.reset(seed=0)
            seconds = []
            for _ in range(WARMUP + STEPS):
                action = np.array([space.sample()])
                t = time.perf_counter()
                wm.step(action)
                seconds.append(time.perf_counter() - t)
            fps[name].append(1 / statistics.median(seconds[WARMUP:]))
    base = statistics.median(fps["4 steps"])
    for name, runs in fps.items():
        med = statistics.median(runs)
        print(f"{name}: median {med:.1f} fps (x{med / base:.2f} of 4 steps), rounds {[round(x, 1) for x in runs]}")


if __name__ == "__main__":
    main()
