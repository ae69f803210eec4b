"""How far two correct paths of one pass apart can be: the shipped world's steady-state DiT pass and its decoder in
bf16 against the same weights in fp32, on the same inputs (the rounding that ``selfcheck.TOLERANCE`` must allow).

    python benchmarks/measure_selfcheck_tolerance.py [world] [batch]

Prints, for each output, the largest difference as a fraction of the fp32 output's largest magnitude (or of 1).
"""

from __future__ import annotations

import copy
import sys

import torch

from worldsim.engine import WorldModel
from worldsim.kernels.compiled_pass import CompiledPass
from worldsim.models.conditioning import FrameConditioning


def main() -> None:
    world = sys.argv[1] if len(sys.argv) > 1 else "carracing"
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    wm = WorldModel.from_pretrained(world, dtype=torch.bfloat16)
    wm.reset(seed=0, batch_size=batch)
    actions = wm.action_space
    actions.seed(0)
    for _ in range(wm.sampler_config.steps_to_steady_state + 1):  # a full cache: the pass a compiled graph runs
        wm.step([actions.sample() for _ in range(batch)])
    cache = wm._rollout.memory
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, *wm.latent_shape, generator=g)
    acts = torch.stack([torch.as_tensor(actions.sample()) for _ in range(batch)])[:, None]
    cond = FrameConditioning(acts, torch.zeros(batch, 1, dtype=torch.bool))
    positions = torch.arange(cache.next_frame, cache.next_frame + 1)

    def one_pass(dit, dtype):
        dense = cond.dense(dit.action_embed.spec)
        rope = dit.rope.table(positions, dit.grid(x.shape[-2:]), dtype, cache.k.device)
        keys, values = (t.to(dtype) for t in cache.context(False))
        inputs = (x.to(dtype), torch.ones(batch, 1), dense.actions, dense.null, rope, keys, values, cache.block_bias(1))
        out, k, v = CompiledPass(dit)._forward(*inputs)
        return {**out._asdict(), "keys": k, "values": v}

    with torch.inference_mode():
        bf16 = one_pass(wm.dit, torch.bfloat16)
        fp32 = one_pass(copy.deepcopy(wm.dit).float(), torch.float32)
        latents = torch.randn(batch, *wm.latent_shape, generator=g)
        bf16["frames"] = wm.autoencoder.latents_to_frames(latents)
        fp32["frames"] = copy.deepcopy(wm.autoencoder).float().latents_to_frames(latents)
    for name, a in bf16.items():
        a, b = a.double(), fp32[name].double()
        scale = max(b.abs().max().item(), 1.0)
        diff = (a - b).abs().max().item()
        print(f"{name}: largest {b.abs().max().item():.3g}, off by up to {diff:.3g} = {diff / scale:.4f} x {scale:.3g}")


if __name__ == "__main__":
    main()
