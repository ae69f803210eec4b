"""Steps/s of the shipped world eager and with its passes compiled (``WorldModel.compile``), and what compiling changes
in the frames.

    python benchmarks/measure_compile.py [ROUNDS] [WORLD]     # WORLD: carracing (default), pusht, a checkpoint dir

For each precision (bf16, fp32) and batch size (1 and 32 worlds): one eager and one compiled world, loaded side by
side, rounds alternating between them, the median step of each round (``WorldModel.step``, the decode included; the
compiled world's graphs are built in a warm-up rollout first, timed). Then 16 frames of 8 worlds from each, PSNR of
the compiled world's against the eager one's per horizon.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from worldsim.bench import alternating_rates, print_rates, psnr_per_horizon, rollout_frames
from worldsim.engine import WorldModel

STEPS = 100


def build(wm: WorldModel, batch: int) -> float:
    """Seconds of a rollout that runs the cache into its steady state, where the graphs are built."""
    wm.reset(seed=0, batch_size=batch)
    start = time.perf_counter()
    for _ in range(wm.sampler_config.steps_to_steady_state):
        wm.step(np.stack([wm.action_space.sample() for _ in range(batch)]))
    return time.perf_counter() - start


def main(rounds: int, world: str) -> None:
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        eager = WorldModel.from_pretrained(world, dtype=dtype)
        compiled = WorldModel.from_pretrained(world, dtype=dtype).compile()
        for batch in (1, 32):
            print(f"{name}, batch {batch}: compiling {build(compiled, batch):.1f} s", flush=True)
            rates: dict[str, list[float]] = {"eager": [], "compiled": []}
            for _ in range(rounds):
                for label, wm in (("eager", eager), ("compiled", compiled)):
                    rates[label] += alternating_rates(wm, {label: lambda: None}, batch, rounds=1, steps=STEPS)[label]
            print_rates(rates, "eager", f"{name}, batch {batch}, ")
        a, b = rollout_frames(eager), rollout_frames(compiled)
        psnr = psnr_per_horizon(b, a)
        print(
            f"{name}: compiled against eager, PSNR h1 / h4 / h16 {psnr[0]:.1f} / {psnr[3]:.1f} / {psnr[15]:.1f} dB; "
            f"max difference {np.abs(a - b).max():.0f} grey levels, mean {np.abs(a - b).mean():.4f}",
            flush=True,
        )
        del eager, compiled
    print(f"median of {rounds} rounds, each the median of {STEPS} steps", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, sys.argv[2] if len(sys.argv) > 2 else "carracing")
