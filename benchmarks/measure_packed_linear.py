"""Steps/s of the shipped world with its linear layers through ``F.linear`` or on oneDNN weights packed once.

    python benchmarks/measure_packed_linear.py [ROUNDS]

``F.linear`` reorders the weight into oneDNN's blocked layout on every call; ``PackedLinear`` (``worldsim/kernels/
packed_linear.py``) does it once per weight. First the kernels alone (bf16, 2 threads, the shapes of a pass at batch 1
and at 32 worlds), then whole steps (the MLP's GELU an op of its own, or inside the first layer's call): one loaded
bf16 world per batch size (1 and 32 worlds), rounds alternating, the median step of each round (``WorldModel.step``,
the decode included); then 16 frames of 8 worlds from each variant in fp32 and bf16, PSNR against fp32's before.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from worldsim.bench import mean_call_us, psnr_per_horizon, report_alternating, rollout_frames
from worldsim.engine import WorldModel
from worldsim.kernels import packed_linear

STEPS = 60
PACKED = packed_linear.use_packed
FUSED_FORWARD = packed_linear.PackedLinear.forward


def _gelu_apart(self, x):
    """PackedLinear.forward with the MLP's GELU as an op of its own after the packed call."""
    if self.activation is None:
        return FUSED_FORWARD(self, x)
    self.activation = None
    try:
        return F.gelu(FUSED_FORWARD(self, x))
    finally:
        self.activation = "gelu"


VARIANTS = {
    "F.linear": (lambda x, weight: False, FUSED_FORWARD),
    "packed": (PACKED, _gelu_apart),
    "packed + GELU in the call": (PACKED, FUSED_FORWARD),
}


def use(name: str) -> None:
    packed_linear.use_packed, packed_linear.PackedLinear.forward = VARIANTS[name]


def kernels() -> None:
    for rows in (16, 32, 512):
        for k, n in ((256, 768), (256, 1024), (1024, 256)):
            x = torch.randn(rows, k, dtype=torch.bfloat16)
            w, b = torch.randn(n, k, dtype=torch.bfloat16), torch.randn(n, dtype=torch.bfloat16)
            packed = packed_linear.packed_weight(w)
            with torch.inference_mode():
                plain = mean_call_us(lambda x=x, w=w, b=b: F.linear(x, w, b))
                fast = mean_call_us(
                    lambda x=x, p=packed, b=b: torch.ops.mkldnn._linear_pointwise(x, p, b, "none", [], "")
                )
            print(f"({rows} x {k}) @ ({k} x {n}): F.linear {plain:.1f} us, packed {fast:.1f} us (x{plain / fast:.2f})")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    kernels()
    report_alternating({name: (lambda n=name: use(n)) for name in VARIANTS}, "F.linear", (1, 32), rounds, STEPS)
    use("F.linear")
    reference = rollout_frames(WorldModel.from_pretrained("carracing"))  # fp32, F.linear: the engine before
    for dtype in (torch.float32, torch.bfloat16):
        wm = WorldModel.from_pretrained("carracing", dtype=dtype)
        for name in VARIANTS:
            use(name)
            psnr = psnr_per_horizon(rollout_frames(wm), reference)
            print(f"{dtype} {name} vs fp32 F.linear: PSNR h1 {psnr[0]:.1f}, h4 {psnr[3]:.1f}, h16 {psnr[15]:.1f} dB")
    use("packed + GELU in the call")


if __name__ == "__main__":
    main()
