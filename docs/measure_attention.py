"""Steps/s of the shipped world with the cache's attention as SDPA vs as matrix products and a softmax (bf16, CPU).

    python docs/measure_attention.py [ROUNDS]

One loaded bf16 world per batch size (1 and 32 worlds), rounds alternating between the two attention paths
(``worldsim.models.attention.cache_attention`` and plain ``F.scaled_dot_product_attention``), the median step of
each round (``WorldModel.step``, the decode included). This VM's speed drifts by tens of percent within minutes, so
only rounds taken side by side are compared. Then the frames: 16-step rollouts of each bf16 path from the same start,
noise and actions, PSNR against the fp32 world's (bf16 rounding alone makes an autoregressive rollout drift).
"""

from __future__ import annotations

import statistics
import sys

import numpy as np
import torch
import torch.nn.functional as F

from worldsim.bench import alternating_rates
from worldsim.diffusion import memory
from worldsim.engine import WorldModel
from worldsim.models.attention import cache_attention

STEPS = 60
PATHS = {"sdpa": lambda q, k, v, mask=None: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
         "matmul+softmax": cache_attention}  # fmt: skip


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    for batch in (1, 32):
        wm = WorldModel.from_pretrained("carracing", dtype=torch.bfloat16)
        variants = {name: (lambda a=attend: setattr(memory, "cache_attention", a)) for name, attend in PATHS.items()}
        rate = alternating_rates(wm, variants, batch=batch, rounds=rounds, steps=STEPS)
        memory.cache_attention = cache_attention
        base = statistics.median(rate["sdpa"])
        for name, runs in rate.items():
            med = statistics.median(runs)
            print(f"batch {batch}, {name}: median {med:.1f} frames/s (x{med / base:.2f}), rounds "
                  f"{[round(x, 1) for x in runs]}")  # fmt: skip
    frames_against_fp32()


def rollout(wm: WorldModel, frames: int = 16) -> np.ndarray:
    wm.reset(seed=3, batch_size=8)
    actions = np.random.default_rng(3).integers(0, 5, (frames, 8))
    return np.stack([wm.step(a).frames for a in actions], 1).astype(np.float64)


def frames_against_fp32() -> None:
    reference = rollout(WorldModel.from_pretrained("carracing"))
    wm = WorldModel.from_pretrained("carracing", dtype=torch.bfloat16)
    for name, attend in PATHS.items():
        memory.cache_attention = attend
        mse = ((rollout(wm) - reference) ** 2).mean(axis=(0, 2, 3, 4))  # per horizon, over 8 worlds
        psnr = 10 * np.log10(255**2 / np.maximum(mse, 1e-10))
        print(f"bf16 {name} vs fp32 frames: PSNR h1 {psnr[0]:.1f}, h4 {psnr[3]:.1f}, h16 {psnr[15]:.1f} dB")
    memory.cache_attention = cache_attention


if __name__ == "__main__":
    main()
