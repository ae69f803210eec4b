"""Frames/s of a world with each finished frame written in the next frame's first pass vs in a pass of its own.

    python benchmarks/measure_merge.py carracing bf16

Alternating rounds on one loaded world (``Rollout.merge_writes``), batch 1, median step time of each round.
"""

from __future__ import annotations

import statistics
import sys

import torch

from worldsim.bench import alternating_rates
from worldsim.engine import WorldModel


def main() -> None:
    world = sys.argv[1] if len(sys.argv) > 1 else "carracing"
    dtype = torch.float32 if sys.argv[2:] == ["fp32"] else torch.bfloat16
    wm = WorldModel.from_pretrained(world, dtype=dtype)

    def merging(merge: bool):
        def set_up() -> None:
            wm._rollout.merge_writes = merge

        return set_up

    fps = alternating_rates(wm, {"separate": merging(False), "merged": merging(True)}, steps=200, warmup=20)
    for name, runs in fps.items():
        print(f"{world} {name}: {[round(x, 1) for x in runs]}, median {statistics.median(runs):.1f} fps")
    print(f"ratio {statistics.median(fps['merged']) / statistics.median(fps['separate']):.3f}")


if __name__ == "__main__":
    main()
