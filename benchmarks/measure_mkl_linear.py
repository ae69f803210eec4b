"""Eager fp32 steps/s of the shipped world with its small linear calls on MKL's packed sgemm or through ``F.linear``.

    python benchmarks/measure_mkl_linear.py [ROUNDS]

fp32 calls of fewer than ``FP32_PACKED_FROM_ROWS`` rows take MKL's packed sgemm in ``PackedLinear``
(``worldsim/kernels/packed_linear.py``). First the 32 linear layers of a batch-1 pass alone, in a loop (16 and 32 rows),
then whole eager fp32 steps at 1, 8 and 32 worlds, rounds alternating between the two variants in one process (the
median step of each round, the decode included), then 16 frames of 8 worlds from each, PSNR against ``F.linear``'s.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from worldsim.bench import mean_call_us, psnr_per_horizon, report_alternating, rollout_frames
from worldsim.engine import WorldModel
from worldsim.kernels import packed_linear

MKL = packed_linear.use_mkl_packed
# (out, in) of a batch-1 pass's linear layers: 6 blocks of qkv, proj and the MLP, then the embedders and heads.
SHAPES = [(768, 256), (256, 256), (1024, 256), (256, 1024)] * 6 + [(1536, 256), (512, 256), (128, 256), (256, 128)]


def use(name: str) -> None:
    packed_linear.use_mkl_packed = MKL if name == "MKL packed" else (lambda x, weight: False)


def layers_ms(rows: int, packed: bool, loops: int = 200) -> float:
    weights = [torch.randn(o, i) for o, i in SHAPES]
    biases = [torch.randn(o) for o, _ in SHAPES]
    inputs = [torch.randn(rows, i) for _, i in SHAPES]
    packs = [packed_linear.packed_weight(w, "mkl") for w in weights]

    def one_pass() -> None:
        for x, w, p, b in zip(inputs, weights, packs, biases):
            if packed:
                torch.ops.mkl._mkl_linear(x, p, w, b, rows)
            else:
                F.linear(x, w, b)

    with torch.inference_mode():
        return mean_call_us(one_pass, loops, warmup=10) / 1e3


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for rows in (16, 32):
        plain, fast = layers_ms(rows, False), layers_ms(rows, True)
        print(
            f"{len(SHAPES)} layers, {rows} rows: F.linear {plain:.3f} ms, MKL packed {fast:.3f} ms "
            f"(x{plain / fast:.2f})"
        )
    variants = {name: (lambda n=name: use(n)) for name in ("F.linear", "MKL packed")}
    report_alternating(variants, "F.linear", (1, 8, 32), rounds, dtype=torch.float32)
    wm = WorldModel.from_pretrained("carracing", dtype=torch.float32)
    use("F.linear")
    reference = rollout_frames(wm)
    use("MKL packed")
    psnr = psnr_per_horizon(rollout_frames(wm), reference)
    print(f"MKL packed vs F.linear, fp32: PSNR h1 {psnr[0]:.1f}, h4 {psnr[3]:.1f}, h16 {psnr[15]:.1f} dB")


if __name__ == "__main__":
    main()
