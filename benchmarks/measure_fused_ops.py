"""Steps/s of the shipped world with the block's small elementwise ops as written out or as fused multiply-adds.

    python benchmarks/measure_fused_ops.py [ROUNDS]

Written out (before): modulate ``x * (1 + scale) + shift``, gated residuals ``x + gate * y``, RoPE
``x * cos + roll(x) * sin``: two or three ops each. Fused (now): one ``torch.addcmul`` each (``modulate`` in
``worldsim.kernels``, ``apply_rope``, ``Block.forward``). A batch-1 pass runs ~25 ops a block over 16-32 tokens, so
it is bound by their count; at 32 worlds each op also reads and writes the tokens once more.

One loaded bf16 world per batch size (1 and 32 worlds), rounds alternating, the median step of each round
(``WorldModel.step``, the decode included); then the largest difference of 16 frames of 8 worlds.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import worldsim.kernels as kernels
from worldsim.bench import report_alternating
from worldsim.diffusion import memory
from worldsim.engine import WorldModel
from worldsim.models import dit

STEPS = 60
FUSED = {"modulate": kernels.modulate, "apply_rope": kernels.apply_rope, "forward": dit.Block.forward}


def _modulate(x, shift, scale):
    return x * (1 + scale) + shift


def _apply_rope(x, cos, sin):
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * sin


def _forward(self, x, mod, rope, memory_, layer, text, null_token=None):
    shift1, scale1, gate1, shift2, scale2, gate2 = mod[:, :, :, None].unbind(2)
    x = x + gate1 * self.attn(kernels.norm_modulate(self.norm1, x, shift1, scale1), rope, memory_, layer)
    if self.cross is not None:
        x = x + (self.cross(x, text) if text is not None else self.cross.null_output(null_token, x.dtype))
    return x + gate2 * self.mlp(kernels.norm_modulate(self.norm2, x, shift2, scale2))


WRITTEN_OUT = {"modulate": _modulate, "apply_rope": _apply_rope, "forward": _forward}
VARIANTS = {"written out": WRITTEN_OUT, "fused": FUSED}


def use(name: str) -> None:
    ops = VARIANTS[name]
    kernels.modulate = dit.modulate = ops["modulate"]
    kernels.apply_rope = memory.apply_rope = ops["apply_rope"]
    dit.Block.forward = ops["forward"]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    report_alternating({name: (lambda n=name: use(n)) for name in VARIANTS}, "written out", (32, 1), rounds, STEPS)
    wm = WorldModel.from_pretrained("carracing", dtype=torch.bfloat16)
    frames = {}
    for name in VARIANTS:
        use(name)
        wm.reset(seed=3, batch_size=8)
        actions = np.random.default_rng(3).integers(0, 5, (16, 8))
        frames[name] = np.stack([wm.step(a).frames for a in actions], 1).astype(np.int16)
    a, b = frames.values()
    print(f"frames: largest difference {np.abs(a - b).max()} grey levels, mean {np.abs(a - b).mean():.4f}")
    use("fused")


if __name__ == "__main__":
    main()
