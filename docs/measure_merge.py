"""Frames/s of a world with each finished frame written in the next frame's first pass vs in a pass of its own.

    python docs/measure_merge.py carracing bf16

Alternating rounds on one loaded world (``Rollout.merge_writes``), batch 1, median step time of each round.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import torch

from worldsim.engine import WorldModel

ROUNDS, STEPS, WARMUP = 3, 220, 20


def main() -> None:
    world = sys.argv[1] if len(sys.argv) > 1 else "carracing"
    dtype = torch.float32 if sys.argv[2:] == ["fp32"] else torch.bfloat16
    wm = WorldModel.from_pretrained(world, dtype=dtype)
    space = wm.action_space
    space.seed(0)
    fps: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(ROUNDS):
        for merge in (False, True):
            wm.reset(seed=0)
            wm._rollout.merge_writes = merge
            seconds = []
            for _ in range(STEPS):
                action = np.array([space.sample()])
                t = time.perf_counter()
                wm.step(action)
                seconds.append(time.perf_counter() - t)
            fps[merge].append(1 / statistics.median(seconds[WARMUP:]))
    for merge in (False, True):
        runs = [round(x, 1) for x in fps[merge]]
        print(f"{world} {'merged' if merge else 'separate'}: {runs}, median {statistics.median(fps[merge]):.1f} fps")
    print(f"ratio {statistics.median(fps[True]) / statistics.median(fps[False]):.3f}")


if __name__ == "__main__":
    main()
