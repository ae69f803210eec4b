"""Steps/s of the shipped world with three ways to compute the cache's attention (bf16, CPU).

    python benchmarks/measure_attention.py [ROUNDS]

* ``sdpa``: ``F.scaled_dot_product_attention`` with the bool visibility mask (the path before issue 15's change);
* ``matmul, masked_fill``: two matrix products and a softmax, the masked scores by an out-of-place ``masked_fill``
  (shipped from 2026-12-02's first session to its third);
* ``matmul, bias``: the same with an additive bias (0 / -inf) built once per write and added in place to the fresh
  scores (``worldsim.models.attention.cache_attention`` now).

One loaded bf16 world per batch size (1 and 32 worlds), rounds alternating between the paths, the median step of
each round (``WorldModel.step``, the decode included). This VM's speed drifts by tens of percent within minutes, so
only rounds taken side by side are compared. Then the frames: 16-step rollouts of each bf16 path from the same start,
noise and actions, PSNR against the fp32 world's (bf16 rounding alone makes an autoregressive rollout drift).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from worldsim.bench import psnr_per_horizon, report_alternating, rollout_frames
from worldsim.diffusion import memory
from worldsim.engine import WorldModel
from worldsim.models.attention import cache_attention

STEPS = 60
SHIPPED_BIAS = memory.KVCache.block_bias


def _bool_mask(self: memory.KVCache, frames: int, ahead: bool = False) -> torch.Tensor | None:
    bias = SHIPPED_BIAS(self, frames, ahead)
    return None if bias is None else bias == 0  # cached with the bias, so built once per write as before


def _masked_fill(q, k, v, mask=None):
    if q.shape[0] < 2:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(scores.softmax(-1), v)


def _sdpa(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


PATHS = {  # name: (how KVCache builds the mask, how attention takes it)
    "sdpa": (_bool_mask, _sdpa),
    "matmul, masked_fill": (_bool_mask, _masked_fill),
    "matmul, bias": (SHIPPED_BIAS, cache_attention),
}


def use(path: str) -> None:
    memory.KVCache.block_bias, memory.cache_attention = PATHS[path]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    report_alternating({name: (lambda n=name: use(n)) for name in PATHS}, "sdpa", (1, 32), rounds, STEPS)
    frames_against_fp32()
    use("matmul, bias")


def frames_against_fp32() -> None:
    use("matmul, bias")
    reference = rollout_frames(WorldModel.from_pretrained("carracing"))
    wm = WorldModel.from_pretrained("carracing", dtype=torch.bfloat16)
    for name in PATHS:
        use(name)
        psnr = psnr_per_horizon(rollout_frames(wm), reference)
        print(f"bf16 {name} vs fp32 frames: PSNR h1 {psnr[0]:.1f}, h4 {psnr[3]:.1f}, h16 {psnr[15]:.1f} dB")


if __name__ == "__main__":
    main()
